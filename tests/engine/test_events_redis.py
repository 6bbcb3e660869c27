"""The Redis event bus: ids shared by every process, history kept per experiment and overall."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from engine.events import Event, EventType, InProcessEventBus
from engine.events_redis import RedisEventBus
from tests.workers import TEST_REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def empty_redis():
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not running at {TEST_REDIS_URL}: start it with `make services`")
    client.flushdb()
    yield
    client.flushdb()


def test_ids_increase_across_two_processes() -> None:
    web, worker = RedisEventBus(TEST_REDIS_URL), RedisEventBus(TEST_REDIS_URL)
    ids = [
        bus.publish(EventType.SWEEP_PROGRESS, experiment_id=1, done=n).id
        for n, bus in enumerate([web, worker] * 5)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 10 and ids[0] > 0
    assert [e.id for e in web.recent(1)] == ids
    assert [e.data["done"] for e in worker.recent(1)] == list(range(10))


def test_an_event_comes_back_as_it_was_published() -> None:
    bus = RedisEventBus(TEST_REDIS_URL)
    sent = bus.publish(EventType.RUN_COMPLETED, experiment_id=7, sweep_id=2, run_id=3, calls=10, score=0.5)
    (kept,) = bus.recent(7)
    assert kept == sent
    assert kept.to_dict()["type"] == "run.completed" and kept.data == {"calls": 10, "score": 0.5}


def test_concurrent_workers_keep_each_list_in_id_order() -> None:
    buses = [RedisEventBus(TEST_REDIS_URL, keep=10_000) for _ in range(4)]

    def publish_many(bus: RedisEventBus) -> None:
        for n in range(100):
            bus.publish(EventType.SWEEP_PROGRESS, experiment_id=n % 2, done=n)

    threads = [threading.Thread(target=publish_many, args=(bus,)) for bus in buses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [e.id for e in buses[0].recent_all()]
    assert len(everything) == 400 and everything == sorted(everything) == list(range(1, 401))
    for experiment in (0, 1):
        ids = [e.id for e in buses[0].recent(experiment)]
        assert len(ids) == 200 and ids == sorted(ids)


def test_recent_keeps_the_last_500_events_of_an_experiment() -> None:
    bus = RedisEventBus(TEST_REDIS_URL)
    for n in range(600):
        bus.publish(EventType.SWEEP_PROGRESS, experiment_id=1, done=n)
    bus.publish(EventType.SWEEP_STARTED, experiment_id=2)
    kept = bus.recent(1)
    assert len(kept) == 500
    assert kept[0].data["done"] == 100 and kept[-1].data["done"] == 599
    assert [e.type for e in bus.recent(2)] == ["sweep.started"]


def test_recent_resumes_after_an_id() -> None:
    bus = RedisEventBus(TEST_REDIS_URL)
    events = [bus.publish(EventType.SWEEP_PROGRESS, experiment_id=1, done=n) for n in range(300)]
    assert [e.data["done"] for e in bus.recent(1, after_id=events[296].id)] == [297, 298, 299]
    assert [e.data["done"] for e in bus.recent(1, after_id=events[9].id)] == list(range(10, 300))
    assert bus.recent(1, after_id=events[-1].id) == []
    assert bus.recent("charlie-exp") == []


# recent_all is shared with the in-process bus; both must answer the same.
BUSES = {"redis": lambda: RedisEventBus(TEST_REDIS_URL), "in-process": InProcessEventBus}


@pytest.mark.parametrize("kind", BUSES)
def test_recent_all_mixes_every_experiment_in_id_order(kind: str) -> None:
    bus = BUSES[kind]()
    alice = bus.publish(EventType.SWEEP_STARTED, experiment_id="alice-exp")
    bob = bus.publish(EventType.SWEEP_STARTED, experiment_id="bob-exp")
    alice_done = bus.publish(EventType.SWEEP_COMPLETED, experiment_id="alice-exp")
    assert bus.recent_all() == [alice, bob, alice_done]
    assert bus.recent_all(after_id=alice.id) == [bob, alice_done]


@pytest.mark.parametrize("kind", BUSES)
def test_recent_all_keeps_the_last_500_events(kind: str) -> None:
    bus = BUSES[kind]()
    for n in range(510):
        bus.publish(EventType.SWEEP_PROGRESS, experiment_id=n % 3, done=n)
    kept = bus.recent_all()
    assert len(kept) == 500 and kept[0].data["done"] == 10


def test_subscribers_hear_this_process_events() -> None:
    bus = RedisEventBus(TEST_REDIS_URL)
    heard: list[Event] = []
    unsubscribe = bus.subscribe(heard.append)
    event = bus.publish(EventType.SWEEP_PAUSED, experiment_id=1)
    unsubscribe()
    bus.publish(EventType.SWEEP_RESUMED, experiment_id=1)
    assert heard == [event]


def test_an_unreachable_redis_does_not_fail_or_stall_the_run() -> None:
    bus = RedisEventBus("redis://127.0.0.1:1/0")  # nothing listens on port 1
    heard: list[Event] = []
    bus.subscribe(heard.append)

    async def run() -> list[Event]:
        return [bus.publish(EventType.RUN_STARTED, experiment_id=1, run_id=n) for n in range(50)]

    started = time.monotonic()
    events = asyncio.run(run())
    assert time.monotonic() - started < 2
    # Not kept (id 0), but webhooks still hear about them.
    assert [e.id for e in events] == [0] * 50 and len(heard) == 50
