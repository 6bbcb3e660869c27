"""A sweep's life: launch (plan, estimate, create runs, dispatch), the
`execute_sweep` job that workers share, pause / resume / stop, and finishing."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connections, transaction

from engine import params as llm_params
from engine import sweep as sweeps
from engine.cache import ResponseCache
from engine.concurrency import concurrency_shares
from engine.events import EventType
from engine.gateway import Gateway
from engine.orchestrator import Orchestrator, SweepReport, runs_in_flight_for
from engine.runner import ITEM_CONCURRENCY
from engine.types import EngineError, SweepState
from experiments.models import Experiment
from runs import bridge, racing
from runs.control import (
    SweepRuns,
    describe,
    fail_held_runs,
    recover_ad_hoc_runs,
    recover_stale_runs,
    sweep_endpoints,
)
from runs.events import flush_publisher, loop_event_bus
from runs.models import ACTIVE_SWEEP_STATUSES, Run, RunStatus, Sweep, SweepStateError, SweepStatus, SweepType
from runs.queue import distributed, enqueue

logger = logging.getLogger(__name__)


class SweepRequestError(ValueError):
    """A launch request that cannot be run; `field` names the culprit (HTTP 400)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass
class SweepRequest:
    type: str = "grid"
    parameter_space: dict | None = None  # default: the experiment's
    n_samples: int | None = None
    seed: int | None = None
    repeats: int = 1
    max_concurrent: int | None = None
    max_tokens: int | None = None  # the token budget
    max_cost: float | None = None  # the budget in money (settings.CURRENCY)
    options: dict | None = None  # extra generator options (guided: top_k, ...)


@dataclass
class Plan:
    space: dict
    generator: Any
    configs: list[dict]
    planned_runs: int
    estimate: dict
    race: dict = field(default_factory=dict)  # racing sweeps: the race's state at launch


def plan_sweep(experiment: Experiment, request: SweepRequest) -> Plan:
    """Validate and size a sweep without creating anything (also the dry run)."""
    space = request.parameter_space if request.parameter_space is not None else experiment.parameter_space
    if request.repeats < 1:
        raise SweepRequestError("repeats", "repeats must be at least 1.")
    try:
        generator = sweeps.build_sweep(
            request.type, space, n_samples=request.n_samples, seed=request.seed, **(request.options or {})
        )
        planned = generator.size()
        sweeps.check_size(planned, settings.MAX_SWEEP_RUNS)
        configs = generator.initial_configs()
        check_sweep_params(experiment, configs)
        items = bridge.items_of(experiment)
        estimate = sweeps.estimate(
            configs,
            bridge.stages_of(experiment),
            items,
            repeats=request.repeats,
            scorers=bridge.scorers_of(experiment),
        )
        race = (
            racing.plan_race(generator, configs, items, estimate) if request.type == SweepType.RACING else {}
        )
    except (sweeps.SweepError, llm_params.ParamError) as exc:
        raise SweepRequestError(exc.field, str(exc)) from None
    except EngineError as exc:  # e.g. a prompt variant whose template does not parse
        raise SweepRequestError("parameter_space", str(exc)) from None
    if planned > len(configs):  # guided: later rounds, priced like the first
        scale = planned / max(1, len(configs))
        estimate = {k: (math.ceil(v * scale) if isinstance(v, int) else v) for k, v in dict(estimate).items()}
    max_cost = round(dearest_price(experiment) * estimate["max_tokens"] / 1_000_000, 6)
    estimate = dict(
        estimate, runs=planned, max_cost=max_cost, **({"race": racing.race_estimate(race)} if race else {})
    )
    return Plan(space, generator, configs, planned, estimate, race)


def check_sweep_params(experiment: Experiment, configs: list[dict]) -> None:
    """Each stage's parameters against the endpoint it calls (an endpoint edited since
    the experiment was saved may no longer list an extra parameter it sets)."""
    endpoints = bridge.all_endpoints(experiment.project_id, with_keys=False)
    own = endpoints.get(experiment.endpoint.name) if experiment.endpoint else None
    llm_params.check_configs(configs, bridge.stages_of(experiment), own, endpoints)


def dearest_price(experiment: Experiment) -> float:
    return experiment.endpoint.dearest_price if experiment.endpoint else 0.0


def token_budget(experiment: Experiment, request: SweepRequest) -> int:
    """The token budget, lowered to what the money budget buys at the endpoint's
    dearest price: a sweep stopped by it has spent no more than its money budget."""
    budget = request.max_tokens or settings.MAX_TOKENS_PER_SWEEP
    price = dearest_price(experiment)
    if request.max_cost is None or price <= 0:
        return budget
    return max(1, min(budget, math.floor(request.max_cost / price * 1_000_000)))


def launch_sweep(experiment: Experiment, request: SweepRequest, user=None, plan: Plan | None = None) -> Sweep:
    """Create the sweep and its runs and dispatch them; `plan` is the request's
    plan when the caller already made one (validating it), so it is not made twice."""
    check_launchable(experiment)
    plan = plan or plan_sweep(experiment, request)
    max_concurrent = request.max_concurrent or settings.MAX_CONCURRENT_RUNS
    workers = worker_count(experiment, plan.space)
    with transaction.atomic():
        # The experiment's row, not its sweeps': with no active sweep there is no sweep
        # row to lock, and two launches at once would both go ahead.
        list(Experiment.objects.select_for_update().filter(pk=experiment.pk).values_list("pk"))
        if experiment.sweeps.filter(status__in=ACTIVE_SWEEP_STATUSES).exists():
            raise SweepStateError("This experiment already has an active sweep; stop it first.")
        sweep = Sweep.objects.create(
            experiment=experiment,
            type=request.type,
            status=SweepStatus.PENDING,
            config={
                "parameter_space": plan.space,
                "n_samples": request.n_samples,
                "seed": request.seed,
                "repeats": request.repeats,
                "workers": workers,
                "options": request.options or {},
                "max_cost": request.max_cost,
            },
            max_concurrent=max_concurrent,
            token_budget=token_budget(experiment, request),
            estimate=plan.estimate,
            race=plan.race,
            total_runs=plan.planned_runs,
            created_by=user,
        )
        create_runs(sweep, plan.configs)
        sweep.set_flag(SweepStatus.RUNNING)
        dispatch(sweep, workers)
    return sweep


def check_launchable(experiment: Experiment) -> None:
    """What every launch needs besides a valid request."""
    if experiment.endpoint_id is None:
        raise SweepRequestError(
            "endpoint", "Choose an endpoint for this experiment before launching a sweep."
        )
    if not experiment.items.exists():
        raise SweepRequestError("dataset", "The experiment has no dataset rows; add some first.")


def worker_count(experiment: Experiment, space: dict) -> int:
    """Orchestrators for one sweep: SWEEP_WORKERS, within every used endpoint's limit."""
    endpoints = bridge.all_endpoints(experiment.project_id, with_keys=False)
    return concurrency_shares(endpoints, sweep_endpoints(experiment, space), settings.SWEEP_WORKERS).workers


def create_runs(sweep: Sweep, configs: list[dict]) -> int:
    """Runs in dispatch order: one model's configurations together, so a local
    server does not reload models back and forth (guided rounds included)."""
    endpoint = sweep.experiment.endpoint
    configs = sweeps.order_by_model(configs, endpoint.default_model if endpoint else "")
    start = sweep.runs.count()
    rows = [
        Run(
            experiment_id=sweep.experiment_id,
            sweep=sweep,
            config=config,
            config_hash=sweeps.config_key(config),
            position=start + i,
        )
        for i, config in enumerate(configs)
    ]
    Run.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    return len(rows)


def dispatch(sweep: Sweep, workers: int | None = None) -> None:
    for _ in range(workers or sweep.config.get("workers", 1)):
        enqueue(execute_sweep, sweep.pk, queue="sweeps")


# -- the job ------------------------------------------------------------------
def execute_sweep(sweep_id: int) -> str:
    """One orchestrator's share of a sweep; any number may run at once."""
    try:
        return _execute_sweep(sweep_id)
    finally:
        # An RQ work horse exits right after the job: send the last events first.
        flush_publisher()


def _execute_sweep(sweep_id: int) -> str:
    sweep = Sweep.objects.select_related("experiment__endpoint").get(pk=sweep_id)
    if sweep.status not in (SweepStatus.PENDING, SweepStatus.RUNNING):
        return f"skipped: sweep is {sweep.status}"
    recover_stale_runs(sweep_id)
    if Sweep.objects.filter(pk=sweep_id).start():
        sweep.status = SweepStatus.RUNNING
        sweep.publish(EventType.SWEEP_STARTED, total_runs=sweep.total_runs)
    try:
        while True:
            report = asyncio.run(orchestrate(sweep))
            if report.reason != "drained" or not next_round(sweep):
                break
    except Exception as exc:  # not a run's failure (those are the run's): the sweep's own
        logger.exception("Sweep %s failed", sweep_id)
        return sweep.fail(f"The sweep's worker failed: {describe(exc)}")
    return sweep.finish(report)


async def orchestrate(sweep: Sweep) -> SweepReport:
    workers = sweep.config.get("workers", 1)
    repeats = sweep.config.get("repeats", 1)
    per_worker = max(1, math.ceil(sweep.max_concurrent / workers))
    per_run = item_concurrency(per_worker, math.ceil(sweep.total_runs / workers))
    async with bridge.DatabaseThreads() as db:
        items = await db.read(bridge.items_of, sweep.experiment)
        project_id = sweep.experiment.project_id
        keys = await db.read(bridge.EndpointKeys, project_id, workers)
        runs_class = racing.RaceRuns if sweep.type == SweepType.RACING else SweepRuns
        source = runs_class(sweep, db, keys, items, repeats, per_run)
        cache = ResponseCache(bridge.OrmCacheStore(db, project_id))
        try:
            async with Gateway(cache, max_concurrent=per_worker) as gateway:
                orchestrator = Orchestrator(
                    source,
                    source,
                    gateway,
                    token_budget=sweep.token_budget,
                    events=loop_event_bus(),
                    runs_in_flight=runs_in_flight_for(per_worker, len(items), repeats, per_run),
                )
                return await orchestrator.execute()
        except Exception as exc:
            # The runs this worker held would otherwise stay "running" until recovered.
            await db.write(fail_held_runs, source.token, f"The sweep's worker failed: {describe(exc)}")
            raise


def item_concurrency(per_worker: int, runs_per_worker: int) -> int:
    """A run's items evaluated at once: ITEM_CONCURRENCY, or more when a worker
    will hold too few runs to fill its calls with that many each (4 configurations
    x 500 rows on 32 calls: 8 each on one worker, 8 each on two sharing it)."""
    runs_needed = math.ceil(per_worker / ITEM_CONCURRENCY)
    runs = max(1, min(runs_per_worker, runs_needed))
    return max(ITEM_CONCURRENCY, math.ceil(per_worker / runs))


def next_round(sweep: Sweep) -> bool:
    """Guided sweeps propose the next configurations from the results so far; racing
    sweeps close the round and start the next (runs/racing.py). Only once every run
    of the round is in, and only while the sweep runs. The worker that opened the
    round goes on with it; the sweep's other workers are queued again to share it."""
    if sweep.type not in (SweepType.GUIDED, SweepType.RACING):
        return False
    with transaction.atomic():
        locked = Sweep.objects.select_for_update().get(pk=sweep.pk)
        out = locked.runs.filter(status__in=(RunStatus.PENDING, RunStatus.RUNNING)).exists()
        if locked.status != SweepStatus.RUNNING or out:
            return False
        opened = racing.open_round(locked) if sweep.type == SweepType.RACING else guided_round(locked)
    workers = locked.config.get("workers", 1)
    if opened and workers > 1:
        dispatch(locked, workers - 1)
    return opened


def guided_round(locked: Sweep) -> bool:
    done = locked.runs.all()
    remaining = locked.total_runs - done.count()
    if remaining <= 0:
        return False
    results = [(r.config, r.weighted_score) for r in done.only("config", "weighted_score")]
    generator = sweeps.build_sweep(
        "guided",
        locked.config["parameter_space"],
        n_samples=locked.total_runs,
        seed=locked.config.get("seed"),
        **locked.config.get("options", {}),
    )
    configs = generator.next_round(results, remaining)
    if not configs:
        Sweep.objects.filter(pk=locked.pk).update(total_runs=done.count())
        return False
    create_runs(locked, configs)
    return True


# -- recovery ----------------------------------------------------------------
def recover_sweeps(startup: bool = False) -> list[int]:
    """Finish the sweeps whose workers died: take back their runs and dispatch
    workers again. At a single-machine server's start every active sweep is
    ownerless (its in-process jobs died with the last process) unless another
    live process still holds some of its runs."""
    recovered = []
    recover_ad_hoc_runs()
    active = Sweep.objects.filter(status__in=RECOVERABLE_STATUSES)
    abandoned = set(active.abandoned().values_list("pk", flat=True))
    for sweep in active:
        taken = recover_stale_runs(sweep.pk)
        held = sweep.runs.filter(status=RunStatus.RUNNING).exists()
        if not taken and sweep.pk not in abandoned and not (startup and not distributed() and not held):
            continue
        if sweep.status == SweepStatus.STOPPING:
            sweep.finish(SweepReport(reason=SweepState.STOPPING))
        else:
            dispatch(sweep)
        recovered.append(sweep.pk)
    return recovered


RECOVERABLE_STATUSES = (SweepStatus.PENDING, SweepStatus.RUNNING, SweepStatus.STOPPING)


def start_recovery(interval_s: float | None = None) -> threading.Thread | None:
    """A daemon thread that recovers sweeps now and every `interval_s` seconds
    (SWEEP_RECOVERY_INTERVAL_S; 0 = never): the web server and every RQ worker run one."""
    interval = settings.SWEEP_RECOVERY_INTERVAL_S if interval_s is None else interval_s
    if interval <= 0:
        return None
    thread = threading.Thread(target=_recover_forever, args=(interval,), name="sweep-recovery", daemon=True)
    thread.start()
    return thread


# Run after recover_sweeps by every recovery thread, each with `startup`: what apps
# above runs take back from dead workers (webhooks adds its deliveries in ready()).
recoveries: list[Callable[..., Any]] = []


def add_recovery(recover: Callable[..., Any]) -> None:
    if recover not in recoveries:
        recoveries.append(recover)


def _recover_forever(interval: float) -> None:
    startup = True
    while True:
        try:
            recovered = recover_sweeps(startup=startup)
            if recovered:
                logger.warning("Recovered sweeps %s from workers that died", recovered)
            for recover in recoveries:
                recover(startup=startup)
            startup = False
        except Exception:  # e.g. the database is not migrated yet, or briefly away
            logger.exception("Recovering sweeps failed; trying again in %s s", interval)
        finally:
            connections.close_all()
        time.sleep(interval)
