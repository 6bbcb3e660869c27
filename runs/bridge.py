"""The one place where ORM rows become engine dataclasses and engine results
become rows. Nothing else in the apps builds engine objects by hand, but for
`Endpoint.engine_config()`, the endpoint's own translation (endpoints sits below
runs and tests a connection with it), which every function here uses."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from django.db import connections, transaction
from django.db.models import Count, F, Sum
from django.db.models.functions import Length
from django.utils import timezone

from endpoints.models import Endpoint
from engine.cache import CachedResponse, CacheStats, StoreStats
from engine.concurrency import concurrency_shares
from engine.runner import RunOutcome, RunSpec, ScoreRecord, StageOutcome
from engine.types import EndpointConfig, Item, ScorerSpec, Stage
from experiments.models import Experiment
from runs.aggregates import RunTally, summarize_many
from runs.models import ResponseCache, Run, RunStatus, Score, ScoreSource, StageResult

LOOKUP_CHUNK = 500  # hashes per SELECT ... IN (...)
INSERT_CHUNK = 500  # rows per INSERT

T = TypeVar("T")


class DatabaseThreads:
    """The ORM as an event loop reaches it: a thread for reads, one for writing
    results and one for a sweep's control (claims, counters, heartbeats).

    Each thread keeps its own connection, so a cache lookup or a claim never
    queues behind a batch of results being written (PostgreSQL serves the
    connections at once; SQLite in WAL mode reads while it writes, and its
    writers take turns). Use it as `async with DatabaseThreads() as db:`;
    leaving closes every connection."""

    def __init__(self) -> None:
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="orm-reads")
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="orm-writes")
        self._control = ThreadPoolExecutor(1, thread_name_prefix="orm-control")

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reads, partial(fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writes, partial(fn, *args))

    async def control(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._control, partial(fn, *args))

    async def __aenter__(self) -> DatabaseThreads:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close each thread's connection (a thread left with one open would
        hold it until the server drops it), then end the threads."""
        loop = asyncio.get_running_loop()
        for executor in (self._reads, self._writes, self._control):
            try:
                await loop.run_in_executor(executor, connections.close_all)
            finally:
                executor.shutdown(wait=False)


# -- rows -> engine ------------------------------------------------------
def stages_of(experiment: Experiment) -> list[Stage]:
    return [
        Stage(
            name=s["name"],
            user=s["user"],
            system=s.get("system") or "",
            model=s.get("model") or None,
            params=dict(s.get("params") or {}),
        )
        for s in experiment.pipeline
    ]


def scorers_of(experiment: Experiment) -> list[ScorerSpec]:
    return [
        ScorerSpec(
            type=s["type"],
            weight=float(s.get("weight", 1.0)),
            config=dict(s.get("config") or {}),
            name=s.get("name") or "",
        )
        for s in experiment.scorers
    ]


def items_of(experiment: Experiment) -> list[Item]:
    rows = experiment.items.order_by("position", "id").values_list("id", "input", "reference", "position")
    return [Item(id=pk, input=inp or {}, reference=ref, position=pos) for pk, inp, ref, pos in rows]


def input_item(variables: dict[str, Any]) -> Item:
    """An ad-hoc input as an item: its `reference` key, if any, is the expected answer.
    The run's stage results and scores then have no dataset row, and the
    leaderboard leaves such runs out."""
    variables = dict(variables)
    reference = variables.pop("reference", "")
    return Item(id=None, input=variables, reference=str(reference or ""))


def all_endpoints(project_id: int, with_keys: bool = True) -> dict[str, EndpointConfig]:
    """The endpoints a project's experiments may call, by name: its own, nobody else's."""
    endpoints = Endpoint.objects.filter(project_id=project_id).select_related("project")
    return {e.name: e.engine_config(with_keys) for e in endpoints}


class EndpointKeys:
    """A project's endpoints by name, with the key and headers decrypted only for
    the endpoints a run uses, once each: an endpoint whose secrets no longer decrypt
    (SECRET_KEY changed) fails the runs that need it, and no other run."""

    def __init__(self, project_id: int, workers: int = 1):
        endpoints = Endpoint.objects.filter(project_id=project_id).select_related("project")
        self.rows = {e.name: e for e in endpoints}
        plain = {name: e.engine_config(with_key=False) for name, e in self.rows.items()}
        # A sweep's workers (chosen at launch within every used endpoint's limit) split the limits.
        self.plain = concurrency_shares(plain, set(), workers).endpoints
        self.keyed: dict[str, EndpointConfig] = {}

    def for_run(self, experiment: Experiment, config: dict[str, Any]) -> dict[str, EndpointConfig]:
        used = endpoints_used(experiment, config)
        return {**self.plain, **{name: self.with_key(name) for name in used if name in self.rows}}

    def with_key(self, name: str) -> EndpointConfig:
        if name not in self.keyed:
            row = self.rows[name]
            self.keyed[name] = replace(
                self.plain[name], api_key=row.get_api_key(), extra_headers=row.get_extra_headers()
            )
        return self.keyed[name]


def endpoints_used(experiment: Experiment, config: dict[str, Any]) -> set[str]:
    """Names of the endpoints a run of `config` may call: the experiment's, any a
    config key `endpoint` / `<stage>.endpoint` names, and any a scorer names."""
    used = {experiment.endpoint.name} if experiment.endpoint_id else set()
    used |= {str(v) for k, v in config.items() if k == "endpoint" or k.endswith(".endpoint")}
    used |= {
        str(s["config"]["endpoint"]) for s in experiment.scorers if (s.get("config") or {}).get("endpoint")
    }
    return used


def human_scores_of(run_ids: list[int]) -> dict[int, dict[Any, list[float]]]:
    """Human ratings by run and item, for many runs in one query."""
    found: dict[int, dict[Any, list[float]]] = {run_id: {} for run_id in run_ids}
    rows = Score.objects.filter(run_id__in=run_ids, source=ScoreSource.HUMAN).values_list(
        "run_id", "item_id", "value"
    )
    for run_id, item_id, value in rows:
        found[run_id].setdefault(item_id, []).append(value)
    return found


def clear_results(run_ids: list[int], item_ids: list[int] | None = None) -> None:
    """Results of an earlier, interrupted attempt are replaced, never doubled
    (with `item_ids`, only those rows' results: a race keeps its earlier rounds')."""
    rows = {} if item_ids is None else {"item_id__in": item_ids}
    StageResult.objects.filter(run_id__in=run_ids, **rows).delete()
    Score.objects.filter(run_id__in=run_ids, source=ScoreSource.AUTO, **rows).delete()


def run_spec(
    run: Run,
    items: list[Item] | None = None,
    keys: EndpointKeys | None = None,
    repeats: int = 1,
    human_scores: dict[Any, list[float]] | None = None,
) -> RunSpec:
    """Everything the engine needs to evaluate `run`; pass `items`, `keys` and
    `human_scores` when building many specs of one experiment, so they are read once.
    Raises crypto.DecryptionError when a key the run needs cannot be decrypted."""
    experiment = run.experiment
    endpoints = (keys or EndpointKeys(experiment.project_id)).for_run(experiment, run.config)
    items = items if items is not None else items_of(experiment)
    ratings = human_scores if human_scores is not None else human_scores_of([run.pk])[run.pk]
    # A rating of the whole run counts for each row nobody rated on its own,
    # as runs/leaderboard.recompute_weighted_score counts it.
    whole_run = ratings.get(None, [])
    if experiment.endpoint_id is None:
        raise ValueError(f"Experiment '{experiment.name}' has no endpoint; choose one before running it.")
    return RunSpec(
        run_id=run.pk,
        experiment_id=experiment.pk,
        sweep_id=run.sweep_id,
        config=dict(run.config),
        stages=stages_of(experiment),
        items=items,
        scorers=scorers_of(experiment),
        endpoint=endpoints[experiment.endpoint.name],
        endpoints=endpoints,
        repeats=repeats,
        human_scores={item.id: ratings.get(item.id) or whole_run for item in items},
    )


# -- engine -> rows ------------------------------------------------------
CACHE_FIELDS = ("config_hash", "response_text", "tokens_in", "tokens_out", "latency_ms", "model", "metadata")


def stage_result_row(run_id: int, row: StageOutcome) -> StageResult:
    return StageResult(
        run_id=run_id,
        item_id=row.item_id,
        sample_index=row.sample_index,
        stage_index=row.stage_index,
        stage_name=row.stage_name,
        model=row.model,
        system_prompt=row.system_prompt,
        user_prompt=row.user_prompt,
        output=row.output,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        latency_ms=row.latency_ms,
        cached=row.cached,
        config_hash=row.config_hash,
    )


def score_row(run_id: int, row: ScoreRecord) -> Score:
    return Score(
        run_id=run_id,
        item_id=row.item_id,
        sample_index=row.sample_index,
        scorer=row.scorer,
        value=row.value,
        details=row.details,
        source=ScoreSource.AUTO,
    )


Rows = tuple[int, "list[StageOutcome] | list[ScoreRecord]"]  # one run's results, as the runner hands them


def save_rows(batches: list[Rows]) -> None:
    """INSERT the results of several writes (stage results and scores of several
    runs, see WriteBatches) with one bulk_create per model. The rows become model
    instances here, in the writing thread, not in the event loop's."""
    stages: list[StageResult] = []
    scores: list[Score] = []
    for run_id, rows in batches:
        for row in rows:
            if isinstance(row, StageOutcome):
                stages.append(stage_result_row(run_id, row))
            else:
                scores.append(score_row(run_id, row))
    with transaction.atomic():
        for model, objects in ((StageResult, stages), (Score, scores)):
            if objects:
                model.objects.bulk_create(objects, batch_size=INSERT_CHUNK)


class OrmResultSink:
    """Writes a run's results in batches (the runner hands over lists)."""

    def __init__(
        self,
        run_id: int,
        db: DatabaseThreads,
        worker: str = "",
        claimed: bool = False,
        tally: RunTally | None = None,
        outcomes: WriteBatches | None = None,
        batches: WriteBatches | None = None,
    ):
        self.run_id = run_id
        self.db = db
        self.worker = worker
        self.claimed = claimed  # a sweep's claim already cleared and marked the run
        # Given when every row of the run goes through this sink: its aggregates
        # are then counted here, not read back when it finishes.
        self.tally = tally
        # A sweep's worker writes its runs' rows, and their outcomes, together.
        self.outcomes, self.batches = outcomes, batches

    async def run_started(self, run_id: Any) -> None:
        if not self.claimed:
            await self.db.write(self._started)

    def _started(self) -> None:
        clear_results([self.run_id])
        Run.objects.filter(pk=self.run_id).update(
            status=RunStatus.RUNNING, started_at=timezone.now(), worker=self.worker, error=""
        )

    async def save_stage_results(self, rows: list[StageOutcome]) -> None:
        await self._save(rows)
        if self.tally is not None:
            self.tally.add_stage_results(rows)

    async def save_scores(self, rows: list[ScoreRecord]) -> None:
        await self._save(rows)
        if self.tally is not None:
            self.tally.add_scores(rows)

    async def _save(self, rows: list[StageOutcome] | list[ScoreRecord]) -> None:
        if self.batches is not None:
            await self.batches.write((self.run_id, rows))
        else:
            await self.db.write(save_rows, [(self.run_id, rows)])

    async def run_finished(self, outcome: RunOutcome) -> None:
        # The tally is complete now; its summary (a bootstrap) is taken in the writing thread.
        if self.outcomes is not None:
            await self.outcomes.write((self.run_id, outcome, self.tally))
        else:
            await self.db.write(save_outcomes, [(self.run_id, outcome, self.tally)])


def save_outcome(run_id: int, outcome: RunOutcome) -> None:
    save_outcomes([(run_id, outcome, None)])


Finished = tuple[int, RunOutcome, "RunTally | None"]  # a run, its outcome, the tally of its rows


def save_outcomes(finished: list[Finished]) -> None:
    """Store finished runs with their aggregates (read back from their rows where
    no tally was kept), one UPDATE each, and move their latest-run marks."""
    now = timezone.now()
    fields = {run_id: outcome_fields(outcome, now) for run_id, outcome, _ in finished}
    summaries = {run_id: tally.summary() if tally else None for run_id, _, tally in finished}
    summarize_many(summaries, fields)


def outcome_fields(outcome: RunOutcome, now: Any) -> dict[str, Any]:
    return {
        "status": RunStatus.COMPLETED if outcome.status == "completed" else RunStatus.FAILED,
        "weighted_score": outcome.weighted_score,
        "score_spread": outcome.score_spread,
        "tokens_in": outcome.tokens_in,
        "tokens_out": outcome.tokens_out,
        "latency_ms": outcome.mean_call_latency_ms,
        "wall_ms": outcome.latency_ms,
        "calls": outcome.calls,
        "cached_calls": outcome.cached_calls,
        "scorer_stats": outcome.scorer_stats,
        "error": outcome.error[:5000],
        "finished_at": now,
    }


class WriteBatches:
    """Group commit: what is handed over while a write is under way goes to the
    database together in the next one. Runs of a sweep finish many at a time
    (a cached re-run finishes hundreds a second), and one transaction for each
    would cost more than the runs themselves."""

    def __init__(self, db: DatabaseThreads, write_many: Callable[[list[Any]], None]):
        self.db, self.write_many = db, write_many
        self.waiting: list[tuple[Any, asyncio.Future]] = []
        self.writing: asyncio.Task | None = None

    async def write(self, entry: Any) -> None:
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((entry, done))
        if self.writing is None:
            self.writing = asyncio.create_task(self._write_all())
        await asyncio.shield(done)  # a cancelled run must not cancel the others' write

    async def _write_all(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    await self.db.write(self.write_many, [entry for entry, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        done.set_exception(exc)
                        done.exception()  # retrieved: a cancelled run's write has nobody awaiting it
                else:
                    for _, done in batch:
                        done.set_result(None)
        finally:
            self.writing = None


# -- the response cache --------------------------------------------------
class OrmCacheStore:
    """engine.cache.CacheStore on the ResponseCache table (SQLite and PostgreSQL)."""

    def __init__(self, db: DatabaseThreads, project_id: int | None = None):
        self.db = db
        self.project_id = project_id  # whose calls store the answers (their statistics)

    async def get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        return await self.db.read(self._get_many, hashes)

    def _get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        found: dict[str, CachedResponse] = {}
        for start in range(0, len(hashes), LOOKUP_CHUNK):
            rows = ResponseCache.objects.filter(config_hash__in=hashes[start : start + LOOKUP_CHUNK])
            for config_hash, text, tin, tout, latency, model, meta_value in rows.values_list(*CACHE_FIELDS):
                found[config_hash] = CachedResponse(text, tin, tout, latency, model, meta_value or {})
        return found

    async def put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        await self.db.write(self._put_many, entries)

    def _put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        rows = {
            key: ResponseCache(
                config_hash=key,
                response_text=r.text,
                tokens_in=r.tokens_in,
                tokens_out=r.tokens_out,
                latency_ms=r.latency_ms,
                model=r.model,
                metadata=r.metadata,
                project_id=self.project_id,
            )
            for key, r in reversed(entries)  # reversed: the first answer of a repeated call wins
        }
        # Another worker may have stored the same call a moment ago: its answer stays,
        # the one runs have already shown.
        ResponseCache.objects.bulk_create(list(rows.values()), batch_size=INSERT_CHUNK, ignore_conflicts=True)

    async def record_hits(self, hashes: list[str]) -> None:
        await self.db.write(self._record_hits, hashes)

    def _record_hits(self, hashes: list[str]) -> None:
        by_count: dict[int, list[str]] = {}
        for key, n in Counter(hashes).items():
            by_count.setdefault(n, []).append(key)
        now = timezone.now()
        for n, keys in by_count.items():
            for start in range(0, len(keys), LOOKUP_CHUNK):
                ResponseCache.objects.filter(config_hash__in=keys[start : start + LOOKUP_CHUNK]).update(
                    hit_count=F("hit_count") + n, last_hit_at=now
                )

    async def stats(self) -> StoreStats:
        return await self.db.read(store_stats, self.project_id)


def store_stats(project_id: int | None = None) -> StoreStats:
    totals = ResponseCache.objects.filter(project_id=project_id).aggregate(
        entries=Count("id"), size=Sum(Length("response_text"))
    )
    return StoreStats(entries=totals["entries"], storage_bytes=int(totals["size"] or 0))


def cache_table_stats(project_ids: Any) -> CacheStats:
    """The cache's figures of some projects (ids, or a query of them), for every worker,
    from the table in one query. Each entry was stored after a miss, so misses =
    entries (failed calls not counted)."""
    totals = ResponseCache.objects.filter(project_id__in=project_ids).aggregate(
        entries=Count("id"), size=Sum(Length("response_text")), hits=Sum("hit_count")
    )
    hits, misses = totals["hits"] or 0, totals["entries"]
    return CacheStats(
        hits=hits,
        misses=misses,
        hit_rate=hits / (hits + misses) if hits + misses else 0.0,
        entries=misses,
        storage_bytes=int(totals["size"] or 0),
        unflushed=0,
    )
