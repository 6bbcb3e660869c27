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

from django.db import connection, connections, models
from django.db.models import Count, F, Sum
from django.db.models.constants import OnConflict
from django.db.models.functions import Length
from django.utils import timezone

from endpoints.models import Endpoint
from engine.cache import CachedResponse, CacheStats, StoreStats
from engine.runner import RunOutcome, RunSpec, ScoreRecord, StageOutcome
from engine.types import EndpointConfig, Item, ScorerSpec, Stage
from experiments.models import Experiment
from runs.aggregates import summarize
from runs.models import ResponseCache, Run, RunStatus, Score, ScoreSource, StageResult

LOOKUP_CHUNK = 500  # hashes per SELECT ... IN (...)
INSERT_CHUNK = 500  # rows per INSERT

T = TypeVar("T")


class DatabaseThreads:
    """The ORM as an event loop reaches it: one thread for reads, one for writes.

    Each thread keeps its own connection, so a cache lookup or a claim never
    queues behind a batch of results being written (PostgreSQL serves the two
    connections at once; SQLite in WAL mode reads while it writes). Use it as
    `async with DatabaseThreads() as db:`; leaving closes both connections."""

    def __init__(self) -> None:
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="orm-reads")
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="orm-writes")

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reads, partial(fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writes, partial(fn, *args))

    async def __aenter__(self) -> DatabaseThreads:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close each thread's connection (a thread left with one open would
        hold it until the server drops it), then end the threads."""
        loop = asyncio.get_running_loop()
        for executor in (self._reads, self._writes):
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

    def __init__(self, project_id: int, plain: dict[str, EndpointConfig] | None = None):
        endpoints = Endpoint.objects.filter(project_id=project_id).select_related("project")
        self.rows = {e.name: e for e in endpoints}
        self.plain = (
            plain if plain is not None else {n: e.engine_config(with_key=False) for n, e in self.rows.items()}
        )
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
STAGE_RESULT_FIELDS = (
    "run_id",
    "item_id",
    "sample_index",
    "stage_index",
    "stage_name",
    "model",
    "system_prompt",
    "user_prompt",
    "output",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "cached",
    "config_hash",
)
SCORE_FIELDS = ("run_id", "item_id", "sample_index", "scorer", "value", "details", "source")
CACHE_FIELDS = ("config_hash", "response_text", "tokens_in", "tokens_out", "latency_ms", "model", "metadata")
CACHE_ROW_FIELDS = (*CACHE_FIELDS, "project_id")


def stage_result_values(run_id: int, row: StageOutcome) -> tuple:
    return (
        run_id,
        row.item_id,
        row.sample_index,
        row.stage_index,
        row.stage_name,
        row.model,
        row.system_prompt,
        row.user_prompt,
        row.output,
        row.tokens_in,
        row.tokens_out,
        row.latency_ms,
        row.cached,
        row.config_hash,
    )


def score_values(run_id: int, row: ScoreRecord) -> tuple:
    return (run_id, row.item_id, row.sample_index, row.scorer, row.value, row.details, ScoreSource.AUTO.value)


def insert_rows(
    model: type[models.Model], fields: tuple[str, ...], rows: list[tuple], ignore_conflicts: bool = False
) -> None:
    """INSERT many rows of `model`, `fields` given per row and every other column
    at its field's default (`auto_now_add` at now), in a few statements.

    A sweep writes three rows per LLM call, from a thread that shares the GIL
    with the calls' event loop. bulk_create builds a model instance per row and
    prepares every value through its field: 70-80 us of CPU per row on
    PostgreSQL, against 32-40 us here, where only the values that need it
    (JSON, datetimes) are prepared."""
    if not rows:
        return
    meta, ops = model._meta, connection.ops
    given = [meta.get_field(name.removesuffix("_id")) for name in fields]
    rest = [f for f in meta.concrete_fields if not f.primary_key and f not in given]
    now = timezone.now()
    defaults = tuple(
        f.get_db_prep_save(now if getattr(f, "auto_now_add", False) else f.get_default(), connection)
        for f in rest
    )
    prepared = [i for i, f in enumerate(given) if isinstance(f, (models.JSONField, models.DateTimeField))]
    columns = ", ".join(ops.quote_name(f.column) for f in [*given, *rest])
    on_conflict = OnConflict.IGNORE if ignore_conflicts else None
    head = f"{ops.insert_statement(on_conflict)} {ops.quote_name(meta.db_table)} ({columns}) VALUES "
    tail = ops.on_conflict_suffix_sql(given, on_conflict, [], []) or ""
    placeholder = "(" + ", ".join(["%s"] * (len(given) + len(rest))) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            params: list[Any] = []
            for row in chunk:
                if prepared:
                    row = list(row)
                    for i in prepared:
                        row[i] = given[i].get_db_prep_save(row[i], connection)
                params += row
                params += defaults
            cursor.execute(f"{head}{', '.join([placeholder] * len(chunk))} {tail}", params)


class OrmResultSink:
    """Writes a run's results in batches (the runner hands over lists)."""

    def __init__(self, run_id: int, db: DatabaseThreads, worker: str = "", claimed: bool = False):
        self.run_id = run_id
        self.db = db
        self.worker = worker
        self.claimed = claimed  # a sweep's claim already cleared and marked the run

    async def run_started(self, run_id: Any) -> None:
        if not self.claimed:
            await self.db.write(self._started)

    def _started(self) -> None:
        clear_results([self.run_id])
        Run.objects.filter(pk=self.run_id).update(
            status=RunStatus.RUNNING, started_at=timezone.now(), worker=self.worker, error=""
        )

    async def save_stage_results(self, rows: list[StageOutcome]) -> None:
        values = [stage_result_values(self.run_id, r) for r in rows]
        await self.db.write(insert_rows, StageResult, STAGE_RESULT_FIELDS, values)

    async def save_scores(self, rows: list[ScoreRecord]) -> None:
        values = [score_values(self.run_id, r) for r in rows]
        await self.db.write(insert_rows, Score, SCORE_FIELDS, values)

    async def run_finished(self, outcome: RunOutcome) -> None:
        await self.db.write(save_outcome, self.run_id, outcome)


def save_outcome(run_id: int, outcome: RunOutcome) -> None:
    status = RunStatus.COMPLETED if outcome.status == "completed" else RunStatus.FAILED
    Run.objects.filter(pk=run_id).update(
        status=status,
        weighted_score=outcome.weighted_score,
        score_spread=outcome.score_spread,
        tokens_in=outcome.tokens_in,
        tokens_out=outcome.tokens_out,
        latency_ms=outcome.mean_call_latency_ms,
        wall_ms=outcome.latency_ms,
        calls=outcome.calls,
        cached_calls=outcome.cached_calls,
        scorer_stats=outcome.scorer_stats,
        error=outcome.error[:5000],
        finished_at=timezone.now(),
    )
    summarize(run_id)


# -- the response cache --------------------------------------------------
class OrmCacheStore:
    """engine.cache.CacheStore on the ResponseCache table (SQLite and PostgreSQL)."""

    def __init__(self, db: DatabaseThreads, project_id: int | None = None):
        self.db = db
        self.project_id = project_id  # whose calls store the answers (their statistics)

    async def get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        return await self.db.read(self._get_many, hashes)

    def _get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        # Plain SQL, like insert_rows: on a cold sweep every call looks up its key.
        found: dict[str, CachedResponse] = {}
        meta, ops = ResponseCache._meta, connection.ops
        metadata = meta.get_field("metadata")
        columns = ", ".join(ops.quote_name(meta.get_field(f).column) for f in CACHE_FIELDS)
        table, key = ops.quote_name(meta.db_table), ops.quote_name(meta.get_field("config_hash").column)
        with connection.cursor() as cursor:
            for start in range(0, len(hashes), LOOKUP_CHUNK):
                chunk = hashes[start : start + LOOKUP_CHUNK]
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(f"SELECT {columns} FROM {table} WHERE {key} IN ({marks})", chunk)
                for config_hash, text, tin, tout, latency, model, meta_value in cursor.fetchall():
                    meta_value = metadata.from_db_value(meta_value, None, connection)
                    found[config_hash] = CachedResponse(text, tin, tout, latency, model, meta_value or {})
        return found

    async def put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        await self.db.write(self._put_many, entries)

    def _put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        rows = {
            key: (key, r.text, r.tokens_in, r.tokens_out, r.latency_ms, r.model, r.metadata, self.project_id)
            for key, r in reversed(entries)  # reversed: the first answer of a repeated hash wins
        }
        # Ignore conflicts: another worker may have stored the same hash a moment ago.
        insert_rows(ResponseCache, CACHE_ROW_FIELDS, list(rows.values()), ignore_conflicts=True)

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
