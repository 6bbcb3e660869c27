"""One run: every item (× repeats) through the stage pipeline, then the scorers.

`run_single` never raises for the run's own failures (a template error, a failed
call, a broken config): it stores what was done, reports status "failed" with a
message that names the stage and item, and returns. Only cancellation propagates.

Scorer errors do not fail the run: that scorer has no value for that item
(value None, the error in `details["error"]`), the weighted score is taken over
the scorers that did score, and `RunOutcome.scorer_errors` counts them.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

from engine.events import EventBus, EventType
from engine.scorers import BaseScorer, ScorerCallError, build_scorer
from engine.templates import parse_template, render
from engine.types import (
    EndpointConfig,
    EngineError,
    Item,
    LLMClient,
    Messages,
    ScoreContext,
    ScoreOutcome,
    ScorerSpec,
    Stage,
)

logger = logging.getLogger(__name__)

# Config keys that are not LLM parameters; each may also be given as `<stage>.<key>`.
TEMPLATE_KEYS = ("system", "user")
MODEL_KEY = "model"
ENDPOINT_KEY = "endpoint"  # an endpoint name, looked up in RunSpec.endpoints

ITEM_CONCURRENCY = 8  # a run's items (and samples) evaluated at once
WRITE_BATCH = 200  # rows per sink call
WRITE_INTERVAL_S = 1.0  # ...or sooner, so live views of slow runs still move


@dataclass
class RunSpec:
    run_id: Any
    experiment_id: Any
    sweep_id: Any
    config: dict[str, Any]  # resolved parameters; see plan_stages() for the keys
    stages: list[Stage]
    items: list[Item]
    scorers: list[ScorerSpec]
    endpoint: EndpointConfig
    endpoints: dict[str, EndpointConfig] = field(default_factory=dict)
    repeats: int = 1
    human_scores: dict[Any, list[float]] = field(default_factory=dict)  # by item id
    item_concurrency: int = ITEM_CONCURRENCY


@dataclass
class StageOutcome:
    item_id: Any
    sample_index: int
    stage_index: int
    stage_name: str
    system_prompt: str
    user_prompt: str
    output: str
    tokens_in: int
    tokens_out: int
    latency_ms: float  # of the call that produced the answer, also when served from cache
    cached: bool
    config_hash: str
    model: str  # as requested (the cache key's model)
    position: int = 0  # the item's row in the dataset
    finish_reason: str | None = None


@dataclass
class ScoreRecord:
    item_id: Any
    scorer: str  # the scorer's name
    value: float | None  # None: no score (no human rating yet, or the scorer failed)
    details: dict[str, Any]
    sample_index: int = 0
    tokens_in: int = 0  # what a judge spent on this score
    tokens_out: int = 0


class ScorerStats(TypedDict):
    scored: int  # outputs (items x samples) the scorer gave a value
    errors: int  # outputs it could not score: a judge reply without a rating, a failed call
    mean_spread: float | None  # a sampled judge's rating spread, averaged over outputs
    spread_outputs: int  # outputs that spread is taken over


@dataclass
class RunOutcome:
    run_id: Any
    status: str  # "completed" or "failed"
    weighted_score: float | None = None  # mean over items of each item's mean over samples
    score_spread: float | None = None  # std over samples, mean across items; None if 1 sample
    scorer_means: dict[str, float | None] = field(default_factory=dict)
    scorer_stats: dict[str, ScorerStats] = field(default_factory=dict)
    tokens_in: int = 0  # of all stage calls, cached ones included: what this config costs
    tokens_out: int = 0
    judge_tokens: int = 0  # in + out spent by scorers
    latency_ms: float = 0.0  # wall time of the whole run
    mean_call_latency_ms: float = 0.0  # mean over stage calls (cached: the original call's)
    error: str = ""
    calls: int = 0  # stage calls made, cached or not
    cached_calls: int = 0
    scorer_errors: int = 0


class ResultSink(Protocol):
    async def run_started(self, run_id: Any) -> None: ...

    async def save_stage_results(self, rows: list[StageOutcome]) -> None: ...

    async def save_scores(self, rows: list[ScoreRecord]) -> None: ...

    async def run_finished(self, outcome: RunOutcome) -> None: ...


class InMemoryResultSink:
    def __init__(self) -> None:
        self.started: list[Any] = []
        self.stage_results: list[StageOutcome] = []
        self.scores: list[ScoreRecord] = []
        self.outcomes: list[RunOutcome] = []
        self.batches = 0  # save_* calls, for tests of the batching

    async def run_started(self, run_id: Any) -> None:
        self.started.append(run_id)

    async def save_stage_results(self, rows: list[StageOutcome]) -> None:
        self.batches += 1
        self.stage_results.extend(rows)

    async def save_scores(self, rows: list[ScoreRecord]) -> None:
        self.batches += 1
        self.scores.extend(rows)

    async def run_finished(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)


class RunFailure(EngineError):
    """Ends a run; the message is what the user sees on the failed run."""


@dataclass(frozen=True)
class StagePlan:
    index: int
    name: str
    system: str
    user: str
    model: str
    params: dict[str, Any]
    endpoint: EndpointConfig


def plan_stages(
    stages: list[Stage],
    config: dict[str, Any],
    endpoint: EndpointConfig,
    endpoints: dict[str, EndpointConfig] | None = None,
) -> list[StagePlan]:
    """Each stage with the run's config applied.

    A plain key applies to every stage, `<stage>.<key>` to that stage only and wins.
    `system` / `user` replace the templates, `model` the model (else the stage's,
    else the endpoint's default), `endpoint` names an endpoint; any other key is an
    LLM parameter over the stage's own, and a value of None removes the parameter.
    """
    if not stages:
        raise RunFailure("The experiment has no stages; add a stage with a user prompt.")
    names = [s.name for s in stages]
    common = {}
    for key, value in config.items():
        if not any(key.startswith(name + ".") for name in names):
            common[key] = value
    return [
        _plan(i, s, {**common, **_own_keys(s.name, config)}, endpoint, endpoints or {})
        for i, s in enumerate(stages)
    ]


def _own_keys(name: str, config: dict[str, Any]) -> dict[str, Any]:
    prefix = name + "."
    return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}


def _plan(
    index: int,
    stage: Stage,
    overrides: dict[str, Any],
    endpoint: EndpointConfig,
    endpoints: dict[str, EndpointConfig],
) -> StagePlan:
    reserved = (*TEMPLATE_KEYS, MODEL_KEY, ENDPOINT_KEY)
    params = {**stage.params, **{k: v for k, v in overrides.items() if k not in reserved}}
    params = {k: v for k, v in params.items() if v is not None}
    if ENDPOINT_KEY in overrides and overrides[ENDPOINT_KEY] != endpoint.name:
        endpoint = _named_endpoint(str(overrides[ENDPOINT_KEY]), stage.name, endpoints)
    model = overrides.get(MODEL_KEY) or stage.model or endpoint.default_model
    if not model:
        raise RunFailure(
            f"Stage '{stage.name}' has no model: set one on the stage, sweep 'model', "
            f"or give endpoint '{endpoint.name}' a default model."
        )
    system = str(overrides.get("system", stage.system) or "")
    user = str(overrides.get("user", stage.user) or "")
    for part, source in (("system", system), ("user", user)):
        try:
            parse_template(source)
        except EngineError as exc:
            raise RunFailure(f"Stage '{stage.name}' {part} prompt: {exc}") from None
    return StagePlan(index, stage.name, system, user, str(model), params, endpoint)


def _named_endpoint(name: str, stage: str, endpoints: dict[str, EndpointConfig]) -> EndpointConfig:
    if name not in endpoints:
        known = ", ".join(sorted(endpoints)) or "none"
        raise RunFailure(f"Stage '{stage}' asks for endpoint '{name}', which is not one of: {known}.")
    return endpoints[name]


async def run_single(
    spec: RunSpec, llm: LLMClient, sink: ResultSink, events: EventBus | None = None
) -> RunOutcome:
    run = _Run(spec, llm, sink)
    started = time.perf_counter()
    await sink.run_started(spec.run_id)
    _publish(
        events,
        EventType.RUN_STARTED,
        spec,
        items=len(spec.items),
        repeats=spec.repeats,
        stages=len(spec.stages),
    )
    try:
        await run.execute()
    except asyncio.CancelledError:
        # A paused or stopped sweep keeps what its runs already did.
        try:
            await run.writer.flush()
        except Exception:
            logger.exception("Run %s: results of the cancelled run could not be stored", spec.run_id)
        raise
    outcome = run.outcome((time.perf_counter() - started) * 1000.0)
    await sink.run_finished(outcome)
    kind = EventType.RUN_COMPLETED if outcome.status == "completed" else EventType.RUN_FAILED
    _publish(
        events,
        kind,
        spec,
        calls=outcome.calls,
        cached_calls=outcome.cached_calls,
        tokens_in=outcome.tokens_in,
        tokens_out=outcome.tokens_out,
        judge_tokens=outcome.judge_tokens,
        weighted_score=outcome.weighted_score,
    )
    return outcome


def _publish(events: EventBus | None, kind: EventType, spec: RunSpec, **data: Any) -> None:
    if events is not None:
        events.publish(
            kind, experiment_id=spec.experiment_id, sweep_id=spec.sweep_id, run_id=spec.run_id, **data
        )


class _Writer:
    """Buffers rows and hands them to the sink in batches, one batch at a time,
    stage rows before the scores that follow them."""

    def __init__(self, sink: ResultSink, batch: int = WRITE_BATCH):
        self.sink = sink
        self.batch = batch
        self.stages: list[StageOutcome] = []
        self.scores: list[ScoreRecord] = []
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def add(self, stages: list[StageOutcome], scores: list[ScoreRecord]) -> None:
        self.stages += stages
        self.scores += scores
        full = len(self.stages) >= self.batch or len(self.scores) >= self.batch
        if full or time.monotonic() - self._last >= WRITE_INTERVAL_S:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            self._last = time.monotonic()
            stages, self.stages = self.stages, []
            scores, self.scores = self.scores, []
            if stages:
                await self.sink.save_stage_results(stages)
            if scores:
                await self.sink.save_scores(scores)


class _Run:
    def __init__(self, spec: RunSpec, llm: LLMClient, sink: ResultSink):
        self.spec = spec
        self.llm = llm
        self.writer = _Writer(sink)
        self.plans: list[StagePlan] = []
        self.scorers: list[tuple[ScorerSpec, BaseScorer]] = []
        self.error = ""
        self.calls = self.cached_calls = self.scorer_errors = 0
        self.tokens_in = self.tokens_out = self.judge_tokens = 0
        self.call_latency_ms = 0.0
        self.first_prompts: dict[tuple[int, Any], tuple[str, str, Messages]] = {}  # by item
        # Per item (by index in spec.items): each sample's weighted score, each scorer's values.
        self.weighted: dict[int, list[float]] = {}
        self.by_scorer: dict[str, dict[int, list[float]]] = {s.name: {} for s in spec.scorers}
        self.errors_by_scorer: dict[str, int] = {s.name: 0 for s in spec.scorers}
        self.spreads: dict[str, list[float]] = {s.name: [] for s in spec.scorers}

    async def execute(self) -> None:
        try:
            self.plans = plan_stages(
                self.spec.stages, self.spec.config, self.spec.endpoint, self.spec.endpoints
            )
            self.scorers = [(s, build_scorer(s)) for s in self.spec.scorers]
            await self._run_jobs()
        except Exception as exc:
            self._fail(exc)
        try:
            await self.writer.flush()
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if not self.error:  # the first failure is the cause; later ones are fallout
            self.error = _describe(exc)

    async def _run_jobs(self) -> None:
        spec = self.spec
        await self._prefetch_first_stage()
        jobs = ((i, item, s) for i, item in enumerate(spec.items) for s in range(spec.repeats))
        workers = min(max(1, spec.item_concurrency), len(spec.items) * spec.repeats)
        await asyncio.gather(*(self._worker(jobs) for _ in range(workers)))

    async def _prefetch_first_stage(self) -> None:
        """The first stage's prompts depend on the item alone: render them now and
        look up all their cached answers in one query instead of one per call
        (with a client that can; others look each call up as it comes)."""
        prefetch = getattr(self.llm, "prefetch", None)
        plan = self.plans[0]
        calls = []
        for item in self.spec.items:
            try:
                self.first_prompts[item.position, item.id] = prompts = self._render(plan, item, "", {})
            except Exception:  # _run_stage renders it again and fails the run with the cause
                continue
            calls += [
                (plan.endpoint, prompts[2], plan.model, plan.params, s) for s in range(self.spec.repeats)
            ]
        if prefetch is not None and calls:
            try:
                await prefetch(calls)
            except Exception:  # an optimisation: each call then looks itself up (and fails, if it must)
                logger.exception(
                    "Run %s: looking up the first stage's answers ahead failed", self.spec.run_id
                )

    def _render(
        self, plan: StagePlan, item: Item, previous: str, outputs: dict[str, str]
    ) -> tuple[str, str, Messages]:
        # Reserved names win over dataset columns of the same name.
        variables = {**item.input, "previous": previous, "stages": outputs}
        system = render(plan.system, variables) if plan.system else ""
        user = render(plan.user, variables)
        messages: Messages = [{"role": "user", "content": user}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return system, user, messages

    async def _worker(self, jobs: Iterator[tuple[int, Item, int]]) -> None:
        # Workers share one iterator, so each job is taken once; after a failure
        # they finish the sample in hand (its rows are kept) and take no more.
        for index, item, sample in jobs:
            if self.error:
                return
            try:
                await self._run_sample(index, item, sample)
            except Exception as exc:
                self._fail(exc)

    async def _run_sample(self, index: int, item: Item, sample: int) -> None:
        outputs: dict[str, str] = {}
        previous = ""
        rows: list[StageOutcome] = []
        try:
            for plan in self.plans:
                if self.error:  # another sample failed the run
                    break
                row = await self._run_stage(plan, item, sample, previous, outputs)
                rows.append(row)
                outputs[plan.name] = previous = row.output
        except Exception:
            await self.writer.add(rows, [])  # a half-done sample: keep what it cost
            raise
        if len(rows) < len(self.plans):
            await self.writer.add(rows, [])
            return
        scores = await self._score(index, item, sample, previous, outputs)
        await self.writer.add(rows, scores)

    async def _run_stage(
        self, plan: StagePlan, item: Item, sample: int, previous: str, outputs: dict[str, str]
    ) -> StageOutcome:
        try:
            first = self.first_prompts.get((item.position, item.id)) if plan.index == 0 else None
            system, user, messages = first or self._render(plan, item, previous, outputs)
            result = await self.llm.complete(
                plan.endpoint, messages, plan.model, plan.params, sample_index=sample
            )
        except Exception as exc:
            raise RunFailure(f"{self._where(plan, item, sample)}: {_describe(exc)}") from exc
        response = result.response
        self.calls += 1
        self.cached_calls += result.cached
        self.tokens_in += response.tokens_in
        self.tokens_out += response.tokens_out
        self.call_latency_ms += response.latency_ms
        return StageOutcome(
            item.id,
            sample,
            plan.index,
            plan.name,
            system,
            user,
            response.text,
            response.tokens_in,
            response.tokens_out,
            response.latency_ms,
            result.cached,
            result.config_hash,
            plan.model,
            item.position,
            response.finish_reason,
        )

    def _where(self, plan: StagePlan, item: Item, sample: int) -> str:
        where = f"Stage '{plan.name}' (#{plan.index + 1}) on item {item.id} (row {item.position})"
        return where + (f", sample {sample}" if self.spec.repeats > 1 else "")

    async def _score(
        self, index: int, item: Item, sample: int, output: str, outputs: dict[str, str]
    ) -> list[ScoreRecord]:
        if not self.scorers:
            return []
        spec = self.spec
        context = ScoreContext(
            reference=item.reference,
            config=spec.config,
            stage_outputs=dict(outputs),
            endpoint=spec.endpoint,
            endpoints=spec.endpoints,
            item_id=item.id,
            human_scores=spec.human_scores.get(item.id, []),
            llm=self.llm,
        )
        if len(self.scorers) == 1:
            outcomes = [await self._score_one(self.scorers[0][1], item, output, context)]
        else:  # judges wait on a model: score side by side
            outcomes = await asyncio.gather(
                *(self._score_one(scorer, item, output, context) for _, scorer in self.scorers)
            )
        return self._record(index, item, sample, outcomes)

    async def _score_one(
        self, scorer: BaseScorer, item: Item, output: str, context: ScoreContext
    ) -> ScoreOutcome:
        try:
            return await scorer.score_async(item.input, output, context)
        except ScorerCallError as exc:  # the judge answered, unusably: its tokens still count
            self.scorer_errors += 1
            return ScoreOutcome(None, {**exc.details, "error": str(exc)}, exc.tokens_in, exc.tokens_out)
        except Exception as exc:
            self.scorer_errors += 1
            return ScoreOutcome(None, {"error": _describe(exc)})

    def _record(self, index: int, item: Item, sample: int, outcomes: list[ScoreOutcome]) -> list[ScoreRecord]:
        records = []
        total = weights = 0.0
        for (spec, _), outcome in zip(self.scorers, outcomes, strict=True):
            self.judge_tokens += outcome.tokens_in + outcome.tokens_out
            records.append(
                ScoreRecord(
                    item.id,
                    spec.name,
                    outcome.value,
                    outcome.details,
                    sample,
                    outcome.tokens_in,
                    outcome.tokens_out,
                )
            )
            if outcome.spread is not None:
                self.spreads[spec.name].append(outcome.spread)
            if outcome.value is None:
                # Counted apart: an output the scorer could not score is not a low score.
                self.errors_by_scorer[spec.name] += "error" in outcome.details
                continue
            self.by_scorer[spec.name].setdefault(index, []).append(outcome.value)
            if spec.weight > 0:
                total += spec.weight * outcome.value
                weights += spec.weight
        if weights:
            self.weighted.setdefault(index, []).append(total / weights)
        return records

    def outcome(self, wall_ms: float) -> RunOutcome:
        score, spread = summarize_samples(self.weighted)
        return RunOutcome(
            run_id=self.spec.run_id,
            status="failed" if self.error else "completed",
            weighted_score=score,
            score_spread=spread,
            scorer_means={name: _mean_of_means(v) for name, v in self.by_scorer.items()},
            scorer_stats={name: self._stats(name) for name in self.by_scorer},
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            judge_tokens=self.judge_tokens,
            latency_ms=wall_ms,
            mean_call_latency_ms=self.call_latency_ms / self.calls if self.calls else 0.0,
            error=self.error,
            calls=self.calls,
            cached_calls=self.cached_calls,
            scorer_errors=self.scorer_errors,
        )

    def _stats(self, name: str) -> ScorerStats:
        spreads = self.spreads[name]
        return ScorerStats(
            scored=sum(len(v) for v in self.by_scorer[name].values()),
            errors=self.errors_by_scorer[name],
            mean_spread=statistics.fmean(spreads) if spreads else None,
            spread_outputs=len(spreads),
        )


def summarize_samples(per_item: dict[Any, list[float]]) -> tuple[float | None, float | None]:
    """A run's weighted score and spread from each item's sample scores: the mean
    over items of each item's mean, and the mean over items of the std over samples
    (None with one sample). The runner and the leaderboard's recompute both use it."""
    means = [statistics.fmean(v) for v in per_item.values() if v]
    spreads = [statistics.pstdev(v) for v in per_item.values() if len(v) > 1]
    return (
        statistics.fmean(means) if means else None,
        statistics.fmean(spreads) if spreads else None,
    )


def _mean_of_means(values: dict[int, list[float]]) -> float | None:
    means = [statistics.fmean(v) for v in values.values()]
    return statistics.fmean(means) if means else None


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
