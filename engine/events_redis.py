"""Progress events shared by several processes through Redis (no Django here).

Same interface as `InProcessEventBus`. One Lua script takes the id (INCR) and
appends the event to its experiment's list and to the global list in a single
step, so every list stays in id order however many workers publish at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from engine.events import RECENT_PER_EXPERIMENT, Event, Subscriber, Subscribers

logger = logging.getLogger(__name__)

# KEYS: id counter, experiment list, global list. ARGV: the event's JSON without
# its id, how many to keep, seconds an idle experiment's list lives.
APPEND_SCRIPT = """
local id = redis.call('INCR', KEYS[1])
local item = '{"id":' .. string.format('%d', id) .. ',' .. string.sub(ARGV[1], 2)
for i = 2, 3 do
  redis.call('RPUSH', KEYS[i], item)
  redis.call('LTRIM', KEYS[i], -tonumber(ARGV[2]), -1)
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return id
"""

OUTAGE_PAUSE_S = 5.0  # after a failed write, skip Redis this long instead of stalling every publish
EXPERIMENT_TTL_S = 7 * 24 * 3600


class RedisEventBus:
    """Events kept in Redis for replay; `subscribe` hears only this process's events
    (the channel layer carries them to other processes)."""

    def __init__(
        self, redis_url: str, keep: int = RECENT_PER_EXPERIMENT, prefix: str = "promptlooper:events"
    ):
        self.keep = keep
        self.prefix = prefix
        # Short timeouts: publish runs inside the runner's event loop.
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)
        self._append = self.redis.register_script(APPEND_SCRIPT)
        self._subscribers = Subscribers()
        self._paused_until = 0.0

    def publish(
        self,
        type: str,
        *,
        experiment_id: Any,
        sweep_id: Any = None,
        run_id: Any = None,
        **data: Any,
    ) -> Event:
        event = Event(0, str(type), experiment_id, sweep_id, run_id, data, time.time())
        event.id = self._store(event)
        self._subscribers.notify(event)
        return event

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def recent(self, experiment_id: Any, after_id: int = 0) -> list[Event]:
        return self._read(self._experiment_key(experiment_id), after_id)

    def recent_all(self, after_id: int = 0) -> list[Event]:
        return self._read(f"{self.prefix}:all", after_id)

    def _experiment_key(self, experiment_id: Any) -> str:
        return f"{self.prefix}:experiment:{experiment_id}"

    def _store(self, event: Event) -> int:
        """The event's id, or 0 when Redis is unreachable (then it is not kept for replay)."""
        if time.monotonic() < self._paused_until:
            return 0
        try:
            payload = json.dumps(_without_id(event), default=str)
            keys = [f"{self.prefix}:seq", self._experiment_key(event.experiment_id), f"{self.prefix}:all"]
            return int(self._append(keys=keys, args=[payload, self.keep, EXPERIMENT_TTL_S]))
        except Exception as exc:  # the run must go on without its live view
            self._paused_until = time.monotonic() + OUTAGE_PAUSE_S
            logger.warning(
                "Events are not kept for replay for the next %ss: Redis failed (%s). Check REDIS_URL.",
                OUTAGE_PAUSE_S,
                exc,
            )
            return 0

    def _read(self, key: str, after_id: int) -> list[Event]:
        if after_id <= 0:
            raw = self.redis.lrange(key, 0, -1)
        else:
            # Newest last: read the tail, widening it until it reaches after_id.
            size = 16
            while True:
                raw = self.redis.lrange(key, -size, -1)
                if len(raw) < size or size >= self.keep or json.loads(raw[0])["id"] <= after_id:
                    break
                size *= 4
        events = (Event(**json.loads(item)) for item in raw)
        return [e for e in events if e.id > after_id]


def _without_id(event: Event) -> dict[str, Any]:
    fields = event.to_dict()
    del fields["id"]  # the script puts the id it takes first
    return fields
