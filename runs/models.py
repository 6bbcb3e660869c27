from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from engine.events import EventType
from engine.types import SweepState
from runs.events import event_bus
from runs.queue import redis_client

if TYPE_CHECKING:
    from engine.orchestrator import SweepReport

FLAG_KEY = "promptlooper:sweep:{}:state"  # the sweep's status, where every worker reads it
PROGRESS_EVERY_S = 0.25  # call counts: a few sweep.progress events a second per sweep


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


ACTIVE_SWEEP_STATUSES = SweepState.ACTIVE
FINISHED_SWEEP_STATUSES = SweepState.FINISHED


class SweepStateError(Exception):
    """The sweep is not in a state that allows this (HTTP 409)."""


class SweepQuerySet(models.QuerySet):
    def start(self) -> bool:
        """Pending to running, once: the first worker in starts the sweep."""
        now = timezone.now()
        return bool(
            self.filter(status=SweepStatus.PENDING).update(
                status=SweepStatus.RUNNING, started_at=now, heartbeat_at=now
            )
        )

    def abandoned(self) -> models.QuerySet:
        """Sweeps still marked active whose workers have all been silent for
        SWEEP_STALE_AFTER_S (a worker died before its first claim, between rounds,
        or before finishing): nothing else would ever end them."""
        cutoff = timezone.now() - timedelta(seconds=settings.SWEEP_STALE_AFTER_S)
        silent = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
        return self.filter(silent).exclude(runs__status=RunStatus.RUNNING)

    def read_state(self, sweep_id: int) -> str:
        """The sweep's status as the workers see it: the Redis flag (distributed
        mode), else the row."""
        status = None
        if settings.REDIS_URL:
            raw = redis_client().get(FLAG_KEY.format(sweep_id))
            status = raw.decode() if raw else None
        if status is None:
            status = self.values_list("status", flat=True).get(pk=sweep_id)
        return status

    def claim_progress_event(self) -> bool:
        """Whether this worker may publish a call-count event now: at most one per
        PROGRESS_EVERY_S per sweep, whichever worker asks (a conditional UPDATE)."""
        now = timezone.now()
        due = Q(progress_at__isnull=True) | Q(progress_at__lte=now - timedelta(seconds=PROGRESS_EVERY_S))
        return self.filter(due).update(progress_at=now) == 1


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
    # Refreshed by its workers while they run it; stale (SWEEP_STALE_AFTER_S) while it is
    # still active and no run is held means every worker died (runs.sweeps.recover_sweeps).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
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

    objects = SweepQuerySet.as_manager()

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

    # -- state changes (each writes the Redis flag the workers read) -----------------
    def set_flag(self, status: str | None = None) -> None:
        """Distributed mode: publish the sweep's status where every worker reads it."""
        if settings.REDIS_URL:
            redis_client().set(FLAG_KEY.format(self.pk), status or self.status, ex=7 * 24 * 3600)

    def pause(self) -> None:
        self._change((SweepStatus.PENDING, SweepStatus.RUNNING), SweepStatus.PAUSED, EventType.SWEEP_PAUSED)

    def resume(self, recover: bool = False) -> None:
        """Continue a paused sweep; with recover=True also one that is marked running
        but whose workers died (their runs, silent for SWEEP_STALE_AFTER_S, are taken back)."""
        from runs.control import recover_stale_runs  # runs.control imports this module
        from runs.sweeps import dispatch

        allowed = (
            (SweepStatus.PAUSED, SweepStatus.RUNNING, SweepStatus.PENDING)
            if recover
            else (SweepStatus.PAUSED,)
        )
        with transaction.atomic():
            self._change(allowed, SweepStatus.RUNNING, EventType.SWEEP_RESUMED)
            recover_stale_runs(self.pk)
            dispatch(self)

    def stop(self) -> None:
        from engine.orchestrator import SweepReport

        was_paused = self.status == SweepStatus.PAUSED
        self._change(
            (SweepStatus.PENDING, SweepStatus.RUNNING, SweepStatus.PAUSED), SweepStatus.STOPPING, None
        )
        if was_paused or not self.runs.filter(status=RunStatus.RUNNING).exists():
            # Nobody is working on it: finish it here.
            self.finish(SweepReport(reason=SweepState.STOPPING))
            self.refresh_from_db()

    def _change(self, allowed: tuple, status: str, kind: EventType | None) -> None:
        from experiments.models import Report

        if not Sweep.objects.filter(pk=self.pk, status__in=allowed).update(status=status):
            self.refresh_from_db()
            raise SweepStateError(f"Sweep #{self.pk} is {self.status}; it cannot become {status}.")
        self.set_flag(status)
        self.refresh_from_db()
        Report.forget(self.experiment_id)
        if kind is not None:
            self.publish(kind)

    def finish(self, report: SweepReport) -> str:
        """A worker's orchestrator is done: the last worker out finishes the sweep."""
        from experiments.models import Report
        from runs import racing  # runs.racing imports this module
        from runs.report import report_markdown

        if report.reason == SweepStatus.BUDGET_EXHAUSTED and Sweep.objects.filter(
            pk=self.pk, status__in=ACTIVE_SWEEP_STATUSES
        ).update(
            status=SweepStatus.BUDGET_EXHAUSTED,
            error=f"Token budget of {self.token_budget:,} reached; calls in flight overshot it by "
            f"{report.overshoot:,} tokens.",
        ):
            self.set_flag(SweepStatus.BUDGET_EXHAUSTED)  # only if the row says so too
        self.refresh_from_db()
        if self.status in (SweepStatus.STOPPING, SweepStatus.BUDGET_EXHAUSTED):
            self.runs.filter(status=RunStatus.PENDING).update(
                status=RunStatus.CANCELLED, finished_at=timezone.now()
            )
        counts = self.recount()
        if counts.get(RunStatus.RUNNING):
            self.publish_progress()
            return f"{report.reason}: other workers still running"
        final = {
            SweepStatus.STOPPING: (SweepStatus.STOPPED, EventType.SWEEP_STOPPED),
            SweepStatus.BUDGET_EXHAUSTED: (SweepStatus.BUDGET_EXHAUSTED, EventType.SWEEP_BUDGET_EXHAUSTED),
            SweepStatus.RUNNING: (SweepStatus.COMPLETED, EventType.SWEEP_COMPLETED),
        }.get(self.status)
        running = self.status == SweepStatus.RUNNING
        if final is None or (running and (counts.get(RunStatus.PENDING) or not racing.race_over(self))):
            self.publish_progress()
            return report.reason
        status, kind = final
        if (
            status == SweepStatus.COMPLETED
            and counts.get(RunStatus.FAILED)
            and not counts.get(RunStatus.COMPLETED)
        ):
            status, kind = SweepStatus.FAILED, EventType.SWEEP_FAILED
            Sweep.objects.filter(pk=self.pk).update(error=self.every_run_failed())
        racing.keep_cut_survivors(self)  # before the sweep shows as finished
        # Only the last worker out gets to finish the sweep (and announce it once).
        if Sweep.objects.filter(pk=self.pk, status=self.status, finished_at__isnull=True).update(
            status=status, finished_at=timezone.now()
        ):
            self.refresh_from_db()
            self.publish_progress()
            self.publish(
                kind,
                tokens_used=self.tokens_used,
                overshoot=report.overshoot,
                completed_runs=self.completed_runs,
                failed_runs=self.failed_runs,
                cancelled_runs=self.cancelled_runs,
            )
            self.set_flag(status)
            Report.forget(self.experiment_id)
            report_markdown(self.experiment)  # built once, here, for everyone who reads it next
        return status

    def every_run_failed(self) -> str:
        first = (
            self.runs.filter(status=RunStatus.FAILED).exclude(error="").order_by("finished_at", "id").first()
        )
        cause = f" The first error: {first.error[:1000]}" if first else ""
        return f"Every run failed.{cause}"

    def fail(self, error: str) -> str:
        """A sweep whose worker crashed: what was not done is cancelled, and it says why."""
        now = timezone.now()
        self.runs.filter(status=RunStatus.PENDING).update(status=RunStatus.CANCELLED, finished_at=now)
        updated = Sweep.objects.filter(pk=self.pk, status__in=ACTIVE_SWEEP_STATUSES).update(
            status=SweepStatus.FAILED, error=error[:5000], finished_at=now
        )
        self.refresh_from_db()
        self.recount()
        if updated:
            self.set_flag(SweepStatus.FAILED)
            self.publish_progress()
            self.publish(EventType.SWEEP_FAILED, error=self.error)
        return str(self.status)

    # -- counting and telling --------------------------------------------------------
    def recount(self) -> dict[str, int]:
        """Authoritative counters from the runs themselves."""
        counts = dict(
            Run.objects.filter(sweep=self)
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        fields = {
            "completed_runs": counts.get(RunStatus.COMPLETED, 0),
            "failed_runs": counts.get(RunStatus.FAILED, 0),
            "cancelled_runs": counts.get(RunStatus.CANCELLED, 0),
        }
        Sweep.objects.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)
        return counts

    def publish(self, kind: EventType, **data: Any) -> None:
        event_bus().publish(kind, experiment_id=self.experiment_id, sweep_id=self.pk, **data)

    def publish_progress(self) -> None:
        self.publish(
            EventType.SWEEP_PROGRESS,
            status=self.status,
            total_runs=self.total_runs,
            completed_runs=self.completed_runs,
            failed_runs=self.failed_runs,
            cancelled_runs=self.cancelled_runs,
            tokens_used=self.tokens_used,
            token_budget=self.token_budget,
            calls_done=self.calls_done,
            total_calls=self.total_calls,
        )


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
