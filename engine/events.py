"""Progress events for the live views: ids and counters only, never prompts or outputs.

`InProcessEventBus` serves one process; a Redis bus implements the same three
methods (publish, subscribe, recent) for several.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

logger = logging.getLogger(__name__)

RECENT_PER_EXPERIMENT = 500


class EventType(StrEnum):
    RUN_STARTED = "run.started"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    SWEEP_STARTED = "sweep.started"
    SWEEP_PROGRESS = "sweep.progress"
    SWEEP_ROUND = "sweep.round"  # a racing round closed: who was dropped, what comes next
    SWEEP_PAUSED = "sweep.paused"
    SWEEP_RESUMED = "sweep.resumed"
    SWEEP_STOPPED = "sweep.stopped"
    SWEEP_COMPLETED = "sweep.completed"
    SWEEP_BUDGET_EXHAUSTED = "sweep.budget_exhausted"
    SWEEP_FAILED = "sweep.failed"


@dataclass
class Event:
    id: int  # increases monotonically across the bus: clients resume with `after_id`
    type: str
    experiment_id: Any
    sweep_id: Any = None
    run_id: Any = None
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = 0.0  # Unix time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Subscriber = Callable[[Event], None]


class EventBus(Protocol):
    def publish(
        self,
        type: str,
        *,
        experiment_id: Any,
        sweep_id: Any = None,
        run_id: Any = None,
        **data: Any,
    ) -> Event: ...

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback` with every event published from now on; returns an unsubscribe."""
        ...

    def recent(self, experiment_id: Any, after_id: int = 0) -> list[Event]: ...

    def recent_all(self, after_id: int = 0) -> list[Event]:
        """The last events of every experiment, in id order."""
        ...


class Subscribers:
    """The listeners of one bus, in this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Subscriber] = []

    def add(self, callback: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def notify(self, event: Event) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:  # a broken listener must not fail the run that published
                logger.exception("Event subscriber %r failed on %s", callback, event.type)


class InProcessEventBus:
    """Thread-safe: sweeps publish from worker threads while views read."""

    def __init__(self, keep: int = RECENT_PER_EXPERIMENT):
        self.keep = keep
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._recent: dict[Any, deque[Event]] = {}
        self._subscribers = Subscribers()

    def publish(
        self,
        type: str,
        *,
        experiment_id: Any,
        sweep_id: Any = None,
        run_id: Any = None,
        **data: Any,
    ) -> Event:
        with self._lock:
            # Id and append under one lock, so each experiment's deque stays in id order.
            event = Event(next(self._ids), str(type), experiment_id, sweep_id, run_id, data, time.time())
            recent = self._recent.get(experiment_id)
            if recent is None:
                recent = self._recent[experiment_id] = deque(maxlen=self.keep)
            recent.append(event)
        self._subscribers.notify(event)
        return event

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def recent(self, experiment_id: Any, after_id: int = 0) -> list[Event]:
        with self._lock:
            events = list(self._recent.get(experiment_id, ()))
        return [e for e in events if e.id > after_id]

    def recent_all(self, after_id: int = 0) -> list[Event]:
        with self._lock:
            events = [e for recent in self._recent.values() for e in recent if e.id > after_id]
        return sorted(events, key=lambda e: e.id)[-self.keep :]
