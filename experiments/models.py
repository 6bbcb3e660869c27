from django.conf import settings
from django.db import models

from engine.types import SweepState
from experiments.validation import validate_experiment, validate_variables

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
        validate_experiment(self.pipeline, self.parameter_space, self.scorers, self.dataset_columns())

    @property
    def stage_names(self) -> list[str]:
        return [stage["name"] for stage in self.pipeline]

    def active_sweep(self) -> "Sweep | None":
        return self.sweeps.filter(status__in=ACTIVE_SWEEP_STATUSES).order_by("-created_at").first()

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


class SweepType(models.TextChoices):
    GRID = "grid"
    RANDOM = "random"
    GUIDED = "guided"
    RACING = "racing"


class SweepStatus(models.TextChoices):
    # The engine's values (and so the Redis flag's): one vocabulary everywhere.
    PENDING = SweepState.PENDING
    RUNNING = SweepState.RUNNING
    PAUSED = SweepState.PAUSED
    STOPPING = SweepState.STOPPING
    STOPPED = SweepState.STOPPED
    COMPLETED = SweepState.COMPLETED
    FAILED = SweepState.FAILED
    BUDGET_EXHAUSTED = SweepState.BUDGET_EXHAUSTED


ACTIVE_SWEEP_STATUSES = (
    SweepStatus.PENDING,
    SweepStatus.RUNNING,
    SweepStatus.PAUSED,
    SweepStatus.STOPPING,
)
FINISHED_SWEEP_STATUSES = (
    SweepStatus.STOPPED,
    SweepStatus.COMPLETED,
    SweepStatus.FAILED,
    SweepStatus.BUDGET_EXHAUSTED,
)


class Sweep(models.Model):
    PROJECT_PATH = "experiment__project"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="sweeps")
    type = models.CharField(max_length=10, choices=SweepType.choices, default=SweepType.GRID)
    # parameter_space, n_samples, seed, repeats, ... as requested at launch
    config = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=20, choices=SweepStatus.choices, default=SweepStatus.PENDING, db_index=True
    )
    max_concurrent = models.PositiveIntegerField(default=8)
    token_budget = models.BigIntegerField(default=1_000_000)
    tokens_used = models.BigIntegerField(default=0)
    calls_done = models.BigIntegerField(
        default=0,
        help_text="LLM calls answered so far, cache hits and failures included (of estimate.calls); "
        "a resumed sweep's replayed calls count again.",
    )
    # When a sweep.progress event last went out: workers publish a few a second at most.
    progress_at = models.DateTimeField(null=True, blank=True)
    estimate = models.JSONField(default=dict, blank=True)
    # Racing sweeps: the slices, each round's candidates and eliminations (runs/racing.py).
    race = models.JSONField(default=dict, blank=True)
    total_runs = models.PositiveIntegerField(default=0)
    completed_runs = models.PositiveIntegerField(default=0)
    failed_runs = models.PositiveIntegerField(default=0)
    cancelled_runs = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sweeps",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["experiment", "status"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(tokens_used__gte=0), name="sweep_tokens_nonnegative"),
        ]

    def __str__(self) -> str:
        return f"{self.type} sweep #{self.pk} of {self.experiment}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_SWEEP_STATUSES

    @property
    def remaining_runs(self) -> int:
        return max(0, self.total_runs - self.completed_runs - self.failed_runs - self.cancelled_runs)

    @property
    def total_calls(self) -> int:
        return int(self.estimate.get("calls", 0)) if isinstance(self.estimate, dict) else 0

    @property
    def progress(self) -> float:
        done = self.total_runs - self.remaining_runs
        return done / self.total_runs if self.total_runs else 0.0


class Report(models.Model):
    """The experiment's markdown report as last built (experiments/export.py): built
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
