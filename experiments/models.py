from django.conf import settings
from django.db import models

from engine.types import SweepState
from experiments.validation import extra_params_for, validate_experiment, validate_variables

# What a running sweep reads from its experiment: frozen while one is active.
SWEEP_INPUTS = ("endpoint", "pipeline", "parameter_space", "scorers")


class ExperimentFrozen(Exception):
    """A change refused while a sweep runs on the experiment (HTTP 409)."""


class Experiment(models.Model):
    """A pipeline of prompt stages, a dataset, a parameter space and weighted scorers."""

    PROJECT_PATH = "project"

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    endpoint = models.ForeignKey(
        "endpoints.Endpoint",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="experiments",
    )
    # [{name, system, user, model?, params?}, ...] in order
    pipeline = models.JSONField(default=list)
    # {param: [values] | {min, max, log?, type?}}; "<stage>.<param>", "<stage>.user" allowed
    parameter_space = models.JSONField(default=dict, blank=True)
    # [{type, weight, config, name?}, ...]
    scorers = models.JSONField(default=list, blank=True)
    # What `run_sweep` and a definition file launch when not told otherwise:
    # {type, n_samples, seed, repeats, max_concurrent, max_tokens, options}
    sweep_defaults = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="experiments",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["name"])]

    def cost(self, config: dict, tokens_in: int, tokens_out: int) -> float:
        """What a configuration's tokens cost at its endpoint's prices (0 unpriced)."""
        if self.endpoint is None:
            return 0.0
        return self.endpoint.cost(tokens_in, tokens_out, str(config.get("model") or ""))

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        extras = extra_params_for(self.project_id, self.endpoint, self.parameter_space, self.scorers)
        validate_experiment(
            self.pipeline, self.parameter_space, self.scorers, self.dataset_columns(), extra_params=extras
        )

    @property
    def stage_names(self) -> list[str]:
        return [stage["name"] for stage in self.pipeline]

    def active_sweep(self) -> models.Model | None:
        """The sweep running on this experiment (runs.models.Sweep), if any."""
        return self.sweeps.filter(status__in=SweepState.ACTIVE).order_by("-created_at").first()

    def changed_sweep_inputs(self, data: dict) -> list[str]:
        """Which of the sweep's inputs `data` (field → new value) would change."""
        changed = [f for f in SWEEP_INPUTS if f in data and data[f] != getattr(self, f)]
        return changed + (["dataset"] if "items" in data else [])

    def check_changeable(self, changing: list[str]) -> None:
        if changing and self.active_sweep():
            raise ExperimentFrozen(
                f"A sweep is running on this experiment; stop it before changing {', '.join(changing)}."
            )

    def next_position(self) -> int:
        """Where a row appended to the dataset goes."""
        last = self.items.aggregate(last=models.Max("position"))["last"]
        return 0 if last is None else last + 1

    def check_dataset(self, columns: set[str], mode: str = "replace") -> None:
        """ValidationError if the templates read a variable a new dataset would not have."""
        if mode == "append":
            columns = columns | set(self.dataset_variables())
        validate_variables(self.pipeline, self.parameter_space, columns)

    def dataset_columns(self) -> set[str] | None:
        """What the templates may read from the dataset; None without rows (nothing to check yet)."""
        if self.pk is None or not self.items.exists():
            return None
        return set(self.dataset_variables())

    def dataset_variables(self) -> list[str]:
        """Names the dataset provides to templates (the union over rows)."""
        names: set[str] = set()
        for row in self.items.values_list("input", flat=True):
            names.update(row or {})
        return sorted(names)


class DatasetItem(models.Model):
    PROJECT_PATH = "experiment__project"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField(default=0)
    input = models.JSONField(default=dict, help_text="Template variables for this row.")
    reference = models.TextField(blank=True, help_text="The expected answer.")

    class Meta:
        ordering = ["experiment", "position", "id"]
        indexes = [models.Index(fields=["experiment", "position"])]

    def __str__(self) -> str:
        return f"#{self.number} {str(self.input)[:60]}"

    @property
    def number(self) -> int:
        """The row's number as people count (from 1); `position` counts from 0."""
        return self.position + 1


class Report(models.Model):
    """The experiment's markdown report as last built (runs/report.py): built
    when a sweep ends or on the first read after a change, forgotten on each change."""

    experiment = models.OneToOneField(
        Experiment, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    markdown = models.TextField()
    built_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Report of experiment #{self.experiment_id}"

    @classmethod
    def forget(cls, experiment_id: int) -> None:
        cls.objects.filter(experiment_id=experiment_id).delete()

    @classmethod
    def keep(cls, experiment_id: int, markdown: str) -> None:
        """Store a report just built, in one statement: the sweep's last worker and a
        first reader may build it at once, and the later one simply replaces it."""
        cls.objects.bulk_create(
            [cls(experiment_id=experiment_id, markdown=markdown)],
            update_conflicts=True,
            unique_fields=["experiment"],
            update_fields=["markdown", "built_at"],
        )
