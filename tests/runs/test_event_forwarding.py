"""Publishing from a run never waits for, or fails because of, what happens to the event next."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from channels.layers import BaseChannelLayer

from engine.events import Event, EventType
from runs.events import event_bus, flush_publisher, loop_event_bus, reset_event_bus

IN_MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class BrokenLayer(BaseChannelLayer):
    """A channel layer whose server is gone."""

    extensions = ["groups"]

    async def group_send(self, group: str, message: dict) -> None:
        raise ConnectionError("channel layer unreachable")


@pytest.fixture(autouse=True)
def single_machine(settings):
    settings.REDIS_URL = ""
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    reset_event_bus()
    yield
    assert flush_publisher(10)
    reset_event_bus()


def fake_webhooks(monkeypatch, dispatch: Callable[[Event], None]) -> None:
    """Stand in for webhooks.tasks.dispatch_event, the listener the publisher calls for each event."""
    monkeypatch.setattr("runs.events.listeners", [dispatch])


def publish_from_worker(count: int, experiment_id: int = 1) -> tuple[list[Event], float]:
    """Publish as the runner does: synchronously, inside a running loop, in a worker thread.
    Returns the events and how long the publish calls took."""
    outcome: dict = {}

    async def run() -> None:
        started = time.monotonic()
        events = [
            event_bus().publish(EventType.RUN_COMPLETED, experiment_id=experiment_id, run_id=n)
            for n in range(count)
        ]
        outcome["result"] = events, time.monotonic() - started

    def work() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_publishing_inside_a_running_loop_does_not_wait_for_slow_webhooks(monkeypatch) -> None:
    heard: list[Event] = []

    def slow_dispatch(event: Event) -> None:
        time.sleep(0.02)
        heard.append(event)

    fake_webhooks(monkeypatch, slow_dispatch)
    events, took = publish_from_worker(50)
    assert took < 0.5  # 50 dispatches take a second
    assert flush_publisher(10)
    assert heard == events


def test_flush_publisher_waits_until_every_event_is_handed_on(monkeypatch) -> None:
    release = threading.Event()
    heard: list[Event] = []
    fake_webhooks(monkeypatch, lambda event: (release.wait(10), heard.append(event)))
    events, _ = publish_from_worker(3)
    assert not flush_publisher(0.2)
    release.set()
    assert flush_publisher(10)
    assert heard == events


def test_a_broken_channel_layer_does_not_break_publish_or_webhooks(monkeypatch, settings, caplog) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.runs.test_event_forwarding.BrokenLayer"}}
    heard: list[Event] = []
    fake_webhooks(monkeypatch, heard.append)
    events, _ = publish_from_worker(3)
    assert flush_publisher(10)
    assert heard == events
    assert "Could not forward event" in caplog.text


def test_a_failing_webhook_dispatch_does_not_stop_the_next_events(monkeypatch, caplog) -> None:
    heard: list[Event] = []

    def dispatch(event: Event) -> None:
        if event.run_id == 0:
            raise RuntimeError("webhook bug")
        heard.append(event)

    fake_webhooks(monkeypatch, dispatch)
    events, _ = publish_from_worker(3)
    assert flush_publisher(10)
    assert heard == events[1:]
    assert "Event listener" in caplog.text and "failed for event" in caplog.text


def test_without_a_connected_browser_events_are_kept_for_replay(monkeypatch) -> None:
    fake_webhooks(monkeypatch, lambda event: None)
    events, _ = publish_from_worker(5, experiment_id=42)
    assert flush_publisher(10)
    assert event_bus().recent(42, after_id=events[1].id) == events[2:]


def test_the_loop_bus_hands_storing_to_the_publisher_and_keeps_the_order(monkeypatch) -> None:
    """In distributed mode storing an event is a round trip to Redis: the runner's
    loop must not wait for it."""
    heard: list[Event] = []
    fake_webhooks(monkeypatch, heard.append)
    bus = event_bus()
    store = bus.publish

    def slow_store(*args, **fields):
        time.sleep(0.01)
        return store(*args, **fields)

    monkeypatch.setattr(bus, "publish", slow_store)

    async def run() -> float:
        started = time.monotonic()
        for n in range(30):
            loop_event_bus().publish(EventType.RUN_COMPLETED, experiment_id=7, run_id=n)
        return time.monotonic() - started

    took = asyncio.run(run())
    assert took < 0.15  # storing them takes 0.3 s
    assert flush_publisher(10)
    kept = bus.recent(7)
    assert [e.run_id for e in kept] == list(range(30)) and [e.id for e in kept] == sorted(e.id for e in kept)
    assert heard == kept
