"""The bridge's writes (results in batches, the cache store) on the database at hand:
SQLite in the first pass, PostgreSQL in the second."""

import asyncio
import datetime as dt
import threading

import pytest
from django.utils import timezone

from engine.cache import CachedResponse
from engine.runner import ScoreRecord, StageOutcome
from runs import bridge
from runs.models import ResponseCache, Run, Score, ScoreSource, StageResult
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run():
    experiment = make_experiment(make_endpoint())
    return Run.objects.create(experiment=experiment, config={"temperature": 0.1}, config_hash="x")


def stage_outcome(item_id, sample=0, output="Paris") -> StageOutcome:
    return StageOutcome(
        item_id,
        sample,
        0,
        "answer",
        "Be brief.",
        "Capital of France?",
        output,
        12,
        3,
        50.5,
        True,
        "h" * 64,
        "m",
    )


async def in_threads(call):
    async with bridge.DatabaseThreads() as db:
        return await call(db)


def test_results_are_stored_as_the_orm_would_store_them(run):
    item = run.experiment.items.first()
    before = timezone.now()

    async def save(db):
        sink = bridge.OrmResultSink(run.pk, db)
        await sink.save_stage_results([stage_outcome(item.pk), stage_outcome(item.pk, sample=1, output="")])
        await sink.save_scores(
            [
                ScoreRecord(item.pk, "keyword", 1.0, {"matched": ["Paris"], "note": "é"}),
                ScoreRecord(None, "judge", None, {"error": "no answer"}, sample_index=1),
            ]
        )

    asyncio.run(in_threads(save))
    first, second = StageResult.objects.filter(run=run).order_by("sample_index")
    assert (first.item_id, first.output, first.tokens_in, first.latency_ms, first.cached) == (
        item.pk,
        "Paris",
        12,
        50.5,
        True,
    )
    assert second.sample_index == 1 and second.output == ""
    keyword, judge = Score.objects.filter(run=run).order_by("id")
    assert keyword.details == {"matched": ["Paris"], "note": "é"} and keyword.value == 1.0
    # Columns the rows did not give take the model's defaults.
    assert keyword.source == ScoreSource.AUTO and keyword.comment == "" and keyword.author is None
    assert before - dt.timedelta(seconds=1) <= keyword.created_at <= timezone.now()
    assert judge.value is None and judge.item is None and judge.details == {"error": "no answer"}


def test_the_cache_store_keeps_the_first_answer_of_a_hash_and_reads_it_back():
    first = CachedResponse("Paris", 10, 2, 40.0, "m", {"params": {"temperature": 0.1}, "raw": {"id": "x"}})
    later = CachedResponse("Lyon", 10, 2, 40.0, "m", {})

    async def store(db):
        cache = bridge.OrmCacheStore(db)
        await cache.put_many([("a" * 64, first), ("b" * 64, later)])
        await cache.put_many([("a" * 64, later)])  # another worker's answer for a stored hash
        return await cache.get_many(["a" * 64, "b" * 64, "c" * 64])

    found = asyncio.run(in_threads(store))
    assert found == {"a" * 64: first, "b" * 64: later}
    row = ResponseCache.objects.get(config_hash="a" * 64)
    assert row.response_text == "Paris" and row.hit_count == 0 and row.created_at is not None


def test_a_lookup_of_more_hashes_than_one_query_takes(monkeypatch):
    monkeypatch.setattr(bridge, "LOOKUP_CHUNK", 3)
    monkeypatch.setattr(bridge, "INSERT_CHUNK", 4)
    entries = [(f"{n:064d}", CachedResponse(f"answer {n}", 1, 1, 1.0, "m", {})) for n in range(10)]

    async def store(db):
        cache = bridge.OrmCacheStore(db)
        await cache.put_many(entries)
        return await cache.get_many([key for key, _ in entries])

    found = asyncio.run(in_threads(store))
    assert {key: r.text for key, r in found.items()} == {key: r.text for key, r in entries}


def test_writes_handed_over_while_one_is_under_way_go_together():
    written: list[list[int]] = []
    started = threading.Event()

    def write_many(entries: list[int]) -> None:
        written.append(entries)
        if entries == [0]:
            started.wait(5)  # the first write is slow: the others gather meanwhile

    async def hand_over(db):
        batches = bridge.WriteBatches(db, write_many)
        first = asyncio.create_task(batches.write(0))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(batches.write(n)) for n in (1, 2, 3)]
        await asyncio.sleep(0.01)
        started.set()
        await asyncio.gather(first, *rest)

    asyncio.run(in_threads(hand_over))
    assert written == [[0], [1, 2, 3]]


def test_a_failed_write_fails_each_of_its_writers():
    def write_many(entries: list[int]) -> None:
        raise RuntimeError("the database went away")

    async def hand_over(db):
        batches = bridge.WriteBatches(db, write_many)
        return await asyncio.gather(*(batches.write(n) for n in range(3)), return_exceptions=True)

    failures = asyncio.run(in_threads(hand_over))
    assert [str(f) for f in failures] == ["the database went away"] * 3
