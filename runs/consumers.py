"""Live progress over WebSockets: replay what the client missed, then stream.

The bus is the source of truth; channel-layer messages only say "something new".
Events from several workers can reach the layer out of id order, so a message
that skips ids makes the consumer read the gap from the bus first. Layers drop
messages for a slow client (over capacity), so once a burst has settled the
consumer reads the bus once more. Each connection sends every id once, in
increasing order: a client that reconnects with `?after=<last id it saw>` loses
none and sees none twice.

Access is checked at connect and again whenever one of the user's memberships is
deleted: every stream of the user also joins the user's own group, told then to
look again. A stream the user may no longer watch closes with 4404; the all-events
stream reads again which experiments it may show.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from engine.events import Event
from experiments.models import Experiment
from projects.access import visible
from projects.models import Membership
from runs.events import ALL_EVENTS_GROUP, event_bus, experiment_group, register_loop

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401  # 4000-4999 are the application's; 401 as in HTTP
CLOSE_NOT_FOUND = 4404  # an experiment outside the user's projects: as if it did not exist
SETTLE_S = 0.5  # quiet time after the last message before the bus is read again

# The loop the consumers run on: in-memory layer messages must be sent on it.
_consumer_loop: asyncio.AbstractEventLoop | None = None


def member_group(user_id: int) -> str:
    """Every live stream of one user: told when that user's access shrinks."""
    return f"member-{user_id}"


class EventStreamConsumer(AsyncJsonWebsocketConsumer):
    """Subclasses name their group and how to read their events from the bus."""

    def group_name(self) -> str:
        raise NotImplementedError

    def read_bus(self, after_id: int) -> list[Event]:
        raise NotImplementedError

    async def allowed(self) -> bool:
        """Whether the user may watch this stream at all (at connect, and again when
        one of the user's memberships is deleted)."""
        return True

    def shown(self, event: dict[str, Any]) -> bool:
        """Whether this connection may see `event` (a stream that mixes projects filters)."""
        return True

    async def refuse(self, code: int) -> None:
        # Accept first so the browser sees the code (a refused handshake shows as 1006).
        await self.accept()
        await self.close(code=code)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        global _consumer_loop
        _consumer_loop = asyncio.get_running_loop()
        # The user's own group before the check: a removal from then on reaches this stream.
        await self.channel_layer.group_add(member_group(user.pk), self.channel_name)
        if not await self.allowed():
            await self.channel_layer.group_discard(member_group(user.pk), self.channel_name)
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.last_id = after_query(self.scope)
        self.sending = asyncio.Lock()  # one reader-and-sender at a time keeps ids in order
        self.settle_at = 0.0
        self.settler: asyncio.Task | None = None
        self.revoked = False
        register_loop()
        # Join before reading the bus: an event is stored before it is forwarded,
        # so every event is either in the replay or arrives on the group (or both).
        self.groups = [member_group(user.pk), self.group_name()]
        await self.channel_layer.group_add(self.group_name(), self.channel_name)
        await self.accept()
        await self.send_events(await self.read_after(self.last_id))

    async def access_changed(self, message: dict[str, Any]) -> None:
        """One of the user's memberships was deleted: look again, close if now refused."""
        if getattr(self, "revoked", True):  # refused at connect: nothing to close
            return
        if not await self.allowed():
            self.revoked = True
            for group in self.groups:
                await self.channel_layer.group_discard(group, self.channel_name)
            await self.close(code=CLOSE_NOT_FOUND)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "settler", None) is not None:
            self.settler.cancel()

    async def event_batch(self, message: dict[str, Any]) -> None:
        """Events forwarded by a worker's publisher, in the order it published them."""
        events = [e for e in message["events"] if e["id"] > self.last_id]  # else replayed already
        if not events:
            return
        async with self.sending:
            for event in events:
                if event["id"] > self.last_id + 1:  # ids in between may belong to us: ask the bus
                    await self.send_events(await self.read_after(self.last_id))
                await self.send_events([event])
        self.settle_at = asyncio.get_running_loop().time() + SETTLE_S
        if self.settler is None or self.settler.done():
            self.settler = asyncio.create_task(self.settle())

    async def settle(self) -> None:
        """Once no message has come for SETTLE_S, send what the layer may have dropped."""
        loop = asyncio.get_running_loop()
        while True:
            while (delay := self.settle_at - loop.time()) > 0:
                await asyncio.sleep(delay)
            due = self.settle_at
            async with self.sending:
                await self.send_events(await self.read_after(self.last_id))
            if self.settle_at == due:
                return

    async def read_after(self, after_id: int) -> list[dict[str, Any]]:
        try:
            events = await asyncio.to_thread(self.read_bus, after_id)
        except Exception:  # Redis down: stream what arrives live
            logger.exception("Could not read events after %s from the bus", after_id)
            return []
        return [event.to_dict() for event in events]

    async def send_events(self, events: list[dict[str, Any]]) -> None:
        if getattr(self, "revoked", False):
            return
        for event in events:
            if event["id"] > self.last_id:
                if self.shown(event):
                    await self.send_json(event)
                self.last_id = event["id"]

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, default=str)


class ExperimentEventsConsumer(EventStreamConsumer):
    """/ws/experiments/<id>/: one experiment's runs and sweeps, for its project's members."""

    async def allowed(self) -> bool:
        experiment_id = self.scope["url_route"]["kwargs"]["experiment_id"]
        return (
            await database_sync_to_async(visible_experiment_ids)(self.scope["user"], [experiment_id]) != set()
        )

    def group_name(self) -> str:
        return experiment_group(self.scope["url_route"]["kwargs"]["experiment_id"])

    def read_bus(self, after_id: int) -> list[Event]:
        return event_bus().recent(self.scope["url_route"]["kwargs"]["experiment_id"], after_id)


class AllEventsConsumer(EventStreamConsumer):
    """/ws/events/: the events of every experiment in the user's projects.

    The stream is shared by all projects, so each event is checked: the
    experiments the user may see are read at connect, and looked up once more
    for an experiment the connection has not met yet (one made since)."""

    async def allowed(self) -> bool:
        self.visible: set[int] = await database_sync_to_async(visible_experiment_ids)(self.scope["user"])
        self.hidden: set[int] = set()
        return True

    async def send_events(self, events: list[dict[str, Any]]) -> None:
        unknown = {e["experiment_id"] for e in events} - self.visible - self.hidden - {None}
        if unknown:
            seen = await database_sync_to_async(visible_experiment_ids)(self.scope["user"], list(unknown))
            self.visible |= seen
            self.hidden |= unknown - seen
        await super().send_events(events)

    def shown(self, event: dict[str, Any]) -> bool:
        return event["experiment_id"] in self.visible

    def group_name(self) -> str:
        return ALL_EVENTS_GROUP

    def read_bus(self, after_id: int) -> list[Event]:
        return event_bus().recent_all(after_id)


@receiver(post_delete, sender=Membership, dispatch_uid="runs.consumers.member_removed")
def member_removed(sender: type, instance: Membership, **kwargs: Any) -> None:
    """Tell the removed user's open streams, once the removal is committed (a stream
    that looked earlier would still see the membership)."""
    user_id = instance.user_id
    transaction.on_commit(lambda: tell_streams(user_id))


def tell_streams(user_id: int) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "access.changed"}
    loop = _consumer_loop
    if loop is not None and not loop.is_closed():
        # The in-memory layer is not thread-safe: send on the consumers' loop.
        future = asyncio.run_coroutine_threadsafe(layer.group_send(member_group(user_id), message), loop)
        future.add_done_callback(_log_failure)
    elif not isinstance(layer, InMemoryChannelLayer):  # streams in other processes
        try:
            async_to_sync(layer.group_send)(member_group(user_id), message)
        except Exception:
            logger.exception("Could not tell user %s's live streams that their access changed", user_id)
    # In memory without a consumer loop: no stream is open in this process.


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("Could not tell live streams that access changed", exc_info=future.exception())


def visible_experiment_ids(user: Any, among: list[int] | None = None) -> set[int]:
    experiments = visible(Experiment.objects.all(), user)
    if among is not None:
        experiments = experiments.filter(pk__in=among)
    return set(experiments.values_list("pk", flat=True))


def after_query(scope: dict[str, Any]) -> int:
    """The `after` id of the query string; 0 (replay all kept) when absent or invalid."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", [])
    try:
        return max(0, int(values[-1]))
    except (IndexError, ValueError):
        return 0
