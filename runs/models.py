from django.conf import settings
from django.db import models
from django.db.models import F, Q

from engine.types import SweepState


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

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="sweeps")
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
        db_table = "experiments_sweep"  # defined in experiments until migration 0006
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


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Run(models.Model):
    """One configuration evaluated over the experiment's dataset."""

    PROJECT_PATH = "experiment__project"

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="runs")
    sweep = models.ForeignKey(Sweep, null=True, blank=True, on_delete=models.CASCADE, related_name="runs")
    config = models.JSONField(default=dict, help_text="Resolved parameters of this configuration.")
    config_hash = models.CharField(max_length=64, db_index=True)
    # Dispatch order inside a sweep: runs of one model are kept together.
    position = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.PENDING)
    weighted_score = models.FloatField(null=True, blank=True)
    score_spread = models.FloatField(null=True, blank=True, help_text="Std. dev. over repeats.")
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    latency_ms = models.FloatField(default=0.0, help_text="Mean latency of the run's LLM calls.")
    wall_ms = models.FloatField(default=0.0)
    calls = models.PositiveIntegerField(default=0)
    cached_calls = models.PositiveIntegerField(default=0)
    # Per scorer: outputs scored, outputs it could not score (kept apart from low
    # scores) and a sampled judge's mean rating spread; see engine.runner.ScorerStats.
    scorer_stats = models.JSONField(default=dict, blank=True)
    # Kept when the run completes (runs/aggregates.py) so that pages read one row per
    # run, never one per call: the ranking's "latest run of this configuration", the
    # run's own interval and per-item scores, per-scorer means and call summaries.
    is_latest = models.BooleanField(default=False)
    own_input = models.BooleanField(
        default=False, help_text="Scored on an input of its own, not the dataset."
    )
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    n_items = models.PositiveIntegerField(default=0)
    item_scores = models.JSONField(default=dict, blank=True, help_text="Weighted score per dataset item id.")
    scorer_means = models.JSONField(default=dict, blank=True)
    cached_tokens = models.BigIntegerField(default=0, help_text="Tokens of the calls the cache answered.")
    latency_p50_ms = models.FloatField(null=True, blank=True, help_text="Of the run's uncached calls.")
    latency_p95_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    eliminated_after = models.PositiveIntegerField(
        null=True, blank=True, help_text="Racing: rows it had scored when it was dropped; null if never."
    )
    worker = models.CharField(max_length=200, blank=True, help_text="Who claimed the run.")
    # Refreshed while a worker holds the run; a stale one means the worker died.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["experiment", "status"]),
            models.Index(fields=["sweep", "status", "position"]),
            # The leaderboard: the latest completed run of each configuration, best first.
            models.Index(
                "experiment",
                F("eliminated_after").desc(),  # PostgreSQL's DESC puts nulls (survivors) first
                F("weighted_score").desc(),
                "tokens_in",
                "id",
                condition=Q(is_latest=True),
                name="run_ranking",
            ),
            # The run list's orderings (see runs/api.ordered_runs). The score, the only
            # nullable one, sorts NULLS LAST both ways: two indexes that SQLite cannot
            # declare, made on PostgreSQL by migration 0004 (SCORE_INDEXES there).
            models.Index(F("tokens_in") + F("tokens_out"), "id", name="run_tokens"),
            models.Index(fields=["latency_ms", "id"], name="run_latency"),
            models.Index(fields=["created_at", "id"], name="run_created"),
        ]
        constraints = [
            # A configuration is evaluated once per sweep, even after a crash and resume.
            models.UniqueConstraint(
                fields=["sweep", "config_hash"],
                condition=models.Q(sweep__isnull=False),
                name="run_unique_config_per_sweep",
            ),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} ({self.status})"

    @property
    def total_tokens(self) -> int:
        return self.tokens_in + self.tokens_out


class StageResult(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stage_results")
    item = models.ForeignKey(
        "experiments.DatasetItem",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,  # replacing a dataset keeps earlier runs' results
        related_name="stage_results",
    )
    sample_index = models.PositiveIntegerField(default=0)
    stage_index = models.PositiveIntegerField()
    stage_name = models.CharField(max_length=100)
    model = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(blank=True)
    user_prompt = models.TextField()
    output = models.TextField(blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(default=0.0)
    cached = models.BooleanField(default=False)
    config_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["run", "item", "sample_index", "stage_index"]
        indexes = [models.Index(fields=["run", "item", "sample_index", "stage_index"])]

    def __str__(self) -> str:
        return f"{self.stage_name} of run #{self.run_id}"


class ScoreSource(models.TextChoices):
    AUTO = "auto"
    HUMAN = "human"


class Score(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="scores")
    item = models.ForeignKey(
        "experiments.DatasetItem", null=True, blank=True, on_delete=models.SET_NULL, related_name="scores"
    )
    sample_index = models.PositiveIntegerField(default=0)
    scorer = models.CharField(max_length=100)
    # None: the scorer could not score this item (details["error"] says why).
    value = models.FloatField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=5, choices=ScoreSource.choices, default=ScoreSource.AUTO)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="ratings"
    )
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "item", "scorer"]
        indexes = [models.Index(fields=["run", "scorer"]), models.Index(fields=["run", "item"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(value__gte=0.0, value__lte=1.0), name="score_value_in_unit_interval"
            ),
        ]

    def __str__(self) -> str:
        shown = "error" if self.value is None else f"{self.value:.3f}"
        return f"{self.scorer}={shown} ({self.source})"


class ResponseCache(models.Model):
    """One LLM answer, keyed by the SHA-256 of its full call configuration."""

    config_hash = models.CharField(max_length=64, unique=True)
    # The project whose call stored the answer (its figures in the cache statistics).
    # The key itself is what separates projects: see Project.cache_namespace.
    project = models.ForeignKey(
        "projects.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    response_text = models.TextField()
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(default=0.0)
    model = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    hit_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "cached response"
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return self.config_hash[:12]
