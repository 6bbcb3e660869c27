"""The in-process event bus: ordered ids, per-experiment history, subscribers."""

from __future__ import annotations

import threading

from engine.events import Event, EventType, InProcessEventBus


def test_events_come_out_in_order_with_increasing_ids() -> None:
    bus = InProcessEventBus()
    first = bus.publish(EventType.RUN_STARTED, experiment_id=1, sweep_id=2, run_id=3, items=10)
    second = bus.publish(EventType.RUN_COMPLETED, experiment_id=1, sweep_id=2, run_id=3, calls=10)
    assert second.id > first.id
    assert [e.type for e in bus.recent(1)] == ["run.started", "run.completed"]
    assert first.data == {"items": 10}
    assert (first.experiment_id, first.sweep_id, first.run_id) == (1, 2, 3)
    assert first.ts > 0


def test_recent_resumes_after_an_id() -> None:
    bus = InProcessEventBus()
    events = [bus.publish(EventType.SWEEP_PROGRESS, experiment_id=1, done=n) for n in range(5)]
    assert [e.data["done"] for e in bus.recent(1, after_id=events[2].id)] == [3, 4]


def test_each_experiment_sees_only_its_own_events() -> None:
    bus = InProcessEventBus()
    bus.publish(EventType.SWEEP_STARTED, experiment_id="alice-exp")
    bus.publish(EventType.SWEEP_STARTED, experiment_id="bob-exp")
    assert [e.experiment_id for e in bus.recent("alice-exp")] == ["alice-exp"]
    assert bus.recent("charlie-exp") == []


def test_recent_keeps_the_last_500_events_of_an_experiment() -> None:
    bus = InProcessEventBus()
    for n in range(600):
        bus.publish(EventType.SWEEP_PROGRESS, experiment_id=1, done=n)
    kept = bus.recent(1)
    assert len(kept) == 500
    assert kept[0].data["done"] == 100 and kept[-1].data["done"] == 599


def test_subscribers_hear_every_event_until_they_unsubscribe() -> None:
    bus = InProcessEventBus()
    heard: list[Event] = []
    unsubscribe = bus.subscribe(heard.append)
    bus.publish(EventType.SWEEP_PAUSED, experiment_id=1, sweep_id=7)
    unsubscribe()
    unsubscribe()  # twice is harmless
    bus.publish(EventType.SWEEP_RESUMED, experiment_id=1, sweep_id=7)
    assert [e.type for e in heard] == ["sweep.paused"]


def test_a_broken_subscriber_does_not_stop_the_publisher() -> None:
    bus = InProcessEventBus()
    heard: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    bus.subscribe(broken)
    bus.subscribe(heard.append)
    event = bus.publish(EventType.SWEEP_STOPPED, experiment_id=1)
    assert heard == [event]


def test_publishing_from_many_threads_keeps_ids_unique_and_ordered() -> None:
    bus = InProcessEventBus(keep=10_000)

    def publish_many() -> None:
        for n in range(200):
            bus.publish(EventType.SWEEP_PROGRESS, experiment_id=1, done=n)

    threads = [threading.Thread(target=publish_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [e.id for e in bus.recent(1)]
    assert len(ids) == 1600 and ids == sorted(ids) and len(set(ids)) == 1600


def test_an_event_turns_into_a_plain_dict_for_the_wire() -> None:
    event = InProcessEventBus().publish(EventType.SWEEP_BUDGET_EXHAUSTED, experiment_id=1, spent=99)
    wire = event.to_dict()
    assert wire["type"] == "sweep.budget_exhausted" and wire["data"] == {"spent": 99}


def test_event_types_are_plain_strings() -> None:
    assert EventType.SWEEP_COMPLETED == "sweep.completed"
    assert EventType.RUN_FAILED.value == "run.failed"


def test_recent_all_merges_experiments_in_id_order() -> None:
    bus = InProcessEventBus()
    a = bus.publish(EventType.RUN_STARTED, experiment_id="alice-exp")
    b = bus.publish(EventType.RUN_STARTED, experiment_id="bob-exp")
    c = bus.publish(EventType.RUN_COMPLETED, experiment_id="alice-exp")
    assert [e.id for e in bus.recent_all()] == [a.id, b.id, c.id]
    assert [e.id for e in bus.recent_all(after_id=a.id)] == [b.id, c.id]
