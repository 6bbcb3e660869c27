"""The process's event bus, and the thread that carries its events onward.

`event_bus()` keeps events in Redis when REDIS_URL is set (ids and history shared
by every process), in memory otherwise. Each event is also handed to one
publisher thread per process, which forwards it to the Channels groups the live
views listen on, then to the `listeners` (the webhooks app subscribes there). The engine's event loops publish through
`loop_event_bus()`, which hands even the storing (a Redis round trip) to that
thread: a run's loop never waits on the network or the database for an event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connections

from engine.events import Event, EventBus, InProcessEventBus, Subscriber
from engine.events_redis import RedisEventBus

logger = logging.getLogger(__name__)

ALL_EVENTS_GROUP = "events"
IDLE_S = 1.0  # the publisher closes its database connections after this long without events
MAX_BACKLOG = 10_000  # beyond this, events are only kept in the bus (replay still has them)
SEND_TIMEOUT_S = 5.0  # per event
FORWARD_BATCH = 100  # events forwarded in one pass

_lock = threading.Lock()
_bus: EventBus | None = None
_publisher: Publisher | None = None
# The web server's loop, where an in-memory channel layer lives (single-machine mode).
_web_loop: asyncio.AbstractEventLoop | None = None
# Called with each event, in order, on the publisher's thread (so they may use the
# ORM): what apps above runs do with events, subscribed in their AppConfig.ready().
listeners: list[Callable[[Event], Any]] = []


def listen(listener: Callable[[Event], Any]) -> None:
    """Hand every event this process publishes to `listener`, after the live views."""
    if listener not in listeners:
        listeners.append(listener)


def event_bus() -> EventBus:
    global _bus
    if _bus is None:
        with _lock:
            if _bus is None:
                bus = RedisEventBus(settings.REDIS_URL) if settings.REDIS_URL else InProcessEventBus()
                bus.subscribe(_get_publisher().put)
                _bus = bus
    return _bus


class BackgroundPublisher:
    """The event bus as an event loop uses it: `publish` returns at once, and the
    publisher thread stores the event (in distributed mode a round trip to
    Redis, which would otherwise stall every LLM call in the loop) and forwards
    it. Events keep the order in which they were published."""

    def __init__(self, bus: EventBus):
        self.bus = bus

    def publish(self, type: str, **fields: Any) -> None:
        _get_publisher().put(partial(self.bus.publish, type, **fields))

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        return self.bus.subscribe(callback)

    def recent(self, experiment_id: Any, after_id: int = 0) -> list[Event]:
        return self.bus.recent(experiment_id, after_id)

    def recent_all(self, after_id: int = 0) -> list[Event]:
        return self.bus.recent_all(after_id)


def loop_event_bus() -> BackgroundPublisher:
    """The bus for the engine's event loops (runs and sweeps)."""
    return BackgroundPublisher(event_bus())


def reset_event_bus() -> None:
    """For tests: the next `event_bus()` reads the settings again."""
    global _bus, _web_loop
    with _lock:
        _bus = None
        _web_loop = None


def register_loop() -> None:
    """Called by consumers: in-memory layer messages are sent on this (running) loop."""
    global _web_loop
    _web_loop = asyncio.get_running_loop()


def flush_publisher(timeout: float = 5.0) -> bool:
    """Wait until every event published so far has been forwarded; False on timeout.
    Jobs in worker processes call it before they return: RQ's work horse exits at once."""
    publisher = _publisher
    return publisher is None or publisher.flush(timeout)


def experiment_group(experiment_id: Any) -> str:
    return f"experiment-{experiment_id}"


def _get_publisher() -> Publisher:
    global _publisher
    if _publisher is None:
        _publisher = Publisher()
    return _publisher


def _forget_after_fork() -> None:
    # Threads do not survive fork: a forked worker starts its own publisher.
    global _lock, _bus, _publisher, _web_loop
    _lock, _bus, _publisher, _web_loop = threading.Lock(), None, None, None


os.register_at_fork(after_in_child=_forget_after_fork)


class Publisher:
    """One daemon thread: forwards events in the order it receives them."""

    def __init__(self) -> None:
        # An event to forward; a call that publishes one (BackgroundPublisher); None: close the database.
        self._queue: queue.SimpleQueue[Event | Callable[[], Any] | None] = queue.SimpleQueue()
        self._pending = 0
        self._overflowing = False
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None  # private, for network channel layers
        threading.Thread(target=self._run, name="promptlooper-events", daemon=True).start()

    def put(self, event: Event | Callable[[], Any] | None) -> None:
        with self._changed:
            if self._pending >= MAX_BACKLOG and event is not None:
                if not self._overflowing:
                    logger.warning("Event backlog full: live views and webhooks skip events until it drains")
                self._overflowing = True
                return
            self._pending += 1
        self._queue.put(event)

    def flush(self, timeout: float) -> bool:
        # Queued last, the marker also closes the thread's database connection:
        # the process may exit, or a test database be dropped, right after.
        self.put(None)
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0, timeout)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        while True:
            try:
                batch = [self._queue.get(timeout=IDLE_S)]
            except queue.Empty:
                connections.close_all()
                continue
            # Whatever else is queued goes in the same pass: one trip through the
            # channel layer's loop per batch, not per event.
            while len(batch) < FORWARD_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                for call in batch:
                    if callable(call):  # its event is queued behind this batch
                        self._publish(call)
                events = [e for e in batch if isinstance(e, Event)]
                if events:
                    self._handle(events)
                if None in batch:
                    connections.close_all()
            finally:
                with self._changed:
                    self._pending -= len(batch)
                    self._overflowing = self._overflowing and self._pending > 0
                    self._changed.notify_all()

    def _publish(self, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception:
            logger.exception("Could not publish an event")

    def _handle(self, events: list[Event]) -> None:
        try:
            self._forward(events)
        except Exception:
            logger.exception("Could not forward events %s..%s to the live views", events[0].id, events[-1].id)
        if listeners:  # they may query: a connection broken since the last batch is replaced
            close_old_connections()
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    logger.exception("Event listener %s failed for event %s", listener.__qualname__, event.id)

    def _forward(self, events: list[Event]) -> None:
        layer = get_channel_layer()
        events = [e for e in events if e.id]  # id 0: the bus could not keep it, consumers would drop it
        if layer is None or not events:
            return
        if isinstance(layer, InMemoryChannelLayer):
            # Not thread-safe: send on the web server's loop. No loop, no listeners.
            loop = _web_loop
            if loop is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(send_to_groups(layer, events), loop).add_done_callback(
                    _log_failure
                )
        else:
            assert self._loop is not None
            timeout = SEND_TIMEOUT_S * len(events)
            self._loop.run_until_complete(asyncio.wait_for(send_to_groups(layer, events), timeout))


async def send_to_groups(layer: BaseChannelLayer, events: list[Event]) -> None:
    """One message per group for the whole batch: each group_send costs the
    layer round trips to Redis, whatever the message holds. In a batch events
    are in the order published, so each group hears them in id order."""
    # Plain JSON values only: the Redis layer packs messages with msgpack.
    dicts = json.loads(json.dumps([event.to_dict() for event in events], default=str))
    by_experiment: dict[Any, list[dict[str, Any]]] = {}
    for event in dicts:
        by_experiment.setdefault(event["experiment_id"], []).append(event)
    for experiment_id, group_events in by_experiment.items():
        await layer.group_send(
            experiment_group(experiment_id), {"type": "event.batch", "events": group_events}
        )
    await layer.group_send(ALL_EVENTS_GROUP, {"type": "event.batch", "events": dicts})


def _log_failure(future: Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("Could not forward an event to the live views", exc_info=future.exception())
