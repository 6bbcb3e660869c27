"""The one place where ORM rows become engine dataclasses and engine results
become rows. Nothing else in the apps builds engine objects by hand."""

from __future__ import annotations

from collections import Counter
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.models import Count, F, Sum
from django.db.models.functions import Length
from django.utils import timezone

from endpoints.models import Endpoint
from engine.cache import CachedResponse, CacheStats, StoreStats
from engine.runner import RunOutcome, RunSpec, ScoreRecord, StageOutcome
from engine.types import EndpointConfig, Item, ScorerSpec, Stage
from experiments.models import Experiment
from runs.models import ResponseCache, Run, RunStatus, Score, ScoreSource, StageResult

LOOKUP_CHUNK = 500  # hashes per SELECT ... IN (...)


# -- rows -> engine ------------------------------------------------------
def endpoint_config(endpoint: Endpoint) -> EndpointConfig:
    return EndpointConfig(
        name=endpoint.name,
        base_url=endpoint.base_url,
        api_key=endpoint.get_api_key(),
        default_model=endpoint.default_model,
        embedding_model=endpoint.embedding_model,
        timeout_s=endpoint.timeout_s,
        max_concurrency=endpoint.max_concurrency,
        extra_headers=dict(endpoint.extra_headers or {}),
        adapter=endpoint.adapter,
    )


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


def all_endpoints() -> dict[str, EndpointConfig]:
    return {e.name: endpoint_config(e) for e in Endpoint.objects.all()}


def human_scores_of(run_ids: list[int]) -> dict[int, dict[Any, list[float]]]:
    """Human ratings by run and item, for many runs in one query."""
    found: dict[int, dict[Any, list[float]]] = {run_id: {} for run_id in run_ids}
    rows = Score.objects.filter(run_id__in=run_ids, source=ScoreSource.HUMAN).values_list(
        "run_id", "item_id", "value"
    )
    for run_id, item_id, value in rows:
        found[run_id].setdefault(item_id, []).append(value)
    return found


def clear_results(run_ids: list[int]) -> None:
    """Results of an earlier, interrupted attempt are replaced, never doubled."""
    StageResult.objects.filter(run_id__in=run_ids).delete()
    Score.objects.filter(run_id__in=run_ids, source=ScoreSource.AUTO).delete()


def run_spec(
    run: Run,
    items: list[Item] | None = None,
    endpoints: dict[str, EndpointConfig] | None = None,
    repeats: int = 1,
    human_scores: dict[Any, list[float]] | None = None,
) -> RunSpec:
    """Everything the engine needs to evaluate `run`; pass `items`, `endpoints` and
    `human_scores` when building many specs of one experiment, so they are read once."""
    experiment = run.experiment
    endpoints = endpoints if endpoints is not None else all_endpoints()
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


class OrmResultSink:
    """Writes a run's results in batches (the runner hands over lists)."""

    def __init__(self, run_id: int, worker: str = "", claimed: bool = False):
        self.run_id = run_id
        self.worker = worker
        self.claimed = claimed  # a sweep's claim already cleared and marked the run

    async def run_started(self, run_id: Any) -> None:
        if not self.claimed:
            await sync_to_async(self._started)()

    def _started(self) -> None:
        clear_results([self.run_id])
        Run.objects.filter(pk=self.run_id).update(
            status=RunStatus.RUNNING, started_at=timezone.now(), worker=self.worker, error=""
        )

    async def save_stage_results(self, rows: list[StageOutcome]) -> None:
        objs = [stage_result_row(self.run_id, r) for r in rows]
        await sync_to_async(StageResult.objects.bulk_create)(objs, batch_size=500)

    async def save_scores(self, rows: list[ScoreRecord]) -> None:
        objs = [score_row(self.run_id, r) for r in rows]
        await sync_to_async(Score.objects.bulk_create)(objs, batch_size=500)

    async def run_finished(self, outcome: RunOutcome) -> None:
        await sync_to_async(save_outcome)(self.run_id, outcome)


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
        error=outcome.error[:5000],
        finished_at=timezone.now(),
    )


# -- the response cache --------------------------------------------------
class OrmCacheStore:
    """engine.cache.CacheStore on the ResponseCache table (SQLite and PostgreSQL)."""

    async def get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        return await sync_to_async(self._get_many)(hashes)

    def _get_many(self, hashes: list[str]) -> dict[str, CachedResponse]:
        found: dict[str, CachedResponse] = {}
        fields = (
            "config_hash",
            "response_text",
            "tokens_in",
            "tokens_out",
            "latency_ms",
            "model",
            "metadata",
        )
        for start in range(0, len(hashes), LOOKUP_CHUNK):
            chunk = hashes[start : start + LOOKUP_CHUNK]
            for key, text, tin, tout, latency, model, meta in ResponseCache.objects.filter(
                config_hash__in=chunk
            ).values_list(*fields):
                found[key] = CachedResponse(text, tin, tout, latency, model, meta or {})
        return found

    async def put_many(self, entries: list[tuple[str, CachedResponse]]) -> None:
        await sync_to_async(self._put_many)(entries)

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
            )
            for key, r in reversed(entries)  # reversed: the first answer of a repeated hash wins
        }
        # ignore_conflicts: another worker may have stored the same hash a moment ago.
        ResponseCache.objects.bulk_create(list(rows.values()), batch_size=500, ignore_conflicts=True)

    async def record_hits(self, hashes: list[str]) -> None:
        await sync_to_async(self._record_hits)(hashes)

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
        return await sync_to_async(store_stats)()


def store_stats() -> StoreStats:
    totals = ResponseCache.objects.aggregate(entries=Count("id"), size=Sum(Length("response_text")))
    return StoreStats(entries=totals["entries"], storage_bytes=int(totals["size"] or 0))


def cache_table_stats() -> CacheStats:
    """The cache's figures for every worker, from the table in one query. Each
    entry was stored after a miss, so misses = entries (failed calls not counted)."""
    totals = ResponseCache.objects.aggregate(
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


async def release_connections() -> None:
    """Close the connections of the thread that sync_to_async ran ORM calls in:
    the loop is ending, and a connection left open there is never reused."""
    await sync_to_async(connections.close_all)()
