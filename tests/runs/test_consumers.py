"""Live progress over WebSockets, on the real ASGI app, in both modes: single machine
(in-memory layer) and distributed (Redis layer and Redis bus)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client

from engine.events import Event, EventType
from engine.events_redis import RedisEventBus
from experiments.models import Experiment
from projects.models import Membership, Project
from promptlooper_site.asgi import application
from runs.consumers import SETTLE_S
from runs.events import event_bus, flush_publisher, reset_event_bus
from tests import workers
from tests.api.helpers import STUB_PIPELINE
from tests.factories import make_project

pytestmark = pytest.mark.django_db(transaction=True)

LAYERS = {
    "single-machine": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "redis": {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 times reads out after 5 s by default, as long as channels_redis's
            # blocking receive: a longer socket timeout (django/channels_redis#422).
            "CONFIG": {"hosts": [{"address": workers.TEST_REDIS_URL, "socket_timeout": 15}]},
        }
    },
}


@pytest.fixture(params=list(LAYERS))
def mode(request, settings) -> str:
    settings.REDIS_URL = workers.TEST_REDIS_URL if request.param == "redis" else ""
    settings.CHANNEL_LAYERS = LAYERS[request.param]
    if request.param == "redis":
        workers.flush_test_redis()
    reset_event_bus()
    yield request.param
    assert flush_publisher(10)
    reset_event_bus()
    if request.param == "redis":
        workers.flush_test_redis()


@pytest.fixture(autouse=True)
async def close_session_lookups_connection():
    yield
    # The auth middleware read the session in asgiref's thread for sync code, whose
    # connection outlives the test (CONN_MAX_AGE): close it, or PostgreSQL cannot
    # drop the test database at the end.
    await sync_to_async(connections.close_all)()


class Browser:
    """Opens WebSockets on the real ASGI app with a session cookie (or none), from
    this site (or another); whatever is still open at the end of the test is closed."""

    def __init__(self, cookie: bytes | None = None):
        self.cookie = cookie
        self.sockets: list[WebsocketCommunicator] = []

    def socket(self, path: str, origin: bytes = b"http://testserver") -> WebsocketCommunicator:
        headers = [(b"origin", origin)] + ([(b"cookie", self.cookie)] if self.cookie else [])
        communicator = WebsocketCommunicator(application, path, headers=headers)
        self.sockets.append(communicator)
        return communicator

    async def open(self, path: str) -> WebsocketCommunicator:
        communicator = self.socket(path)
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        return communicator

    async def close_all(self) -> None:
        # A consumer left running would be cancelled mid-receive when the loop closes.
        for communicator in self.sockets:
            with contextlib.suppress(Exception):
                await communicator.disconnect(timeout=5)


@pytest.fixture
def alice_cookie(transactional_db) -> bytes:
    """The session cookie of alice, logged in (no password: hashing one takes seconds),
    a viewer of the project that holds experiments 1 to 4 (the ids the tests publish for)."""
    alice = User.objects.create_user("alice", "alice@example.com")
    project = make_project(alice="viewer")
    for pk in range(1, 5):
        Experiment.objects.create(pk=pk, project=project, name=f"Experiment {pk}", pipeline=STUB_PIPELINE)
    client = Client()
    client.force_login(alice)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


@pytest.fixture
async def browser(alice_cookie):
    """Alice's browser."""
    browser = Browser(alice_cookie)
    yield browser
    await browser.close_all()


@pytest.fixture
async def stranger():
    """A browser that never logged in."""
    browser = Browser()
    yield browser
    await browser.close_all()


async def receive_ids(communicator: WebsocketCommunicator, count: int) -> list[int]:
    return [(await communicator.receive_json_from(timeout=10))["id"] for _ in range(count)]


def publish_in_worker(experiments: list[int], pause: float = 0.0) -> list[Event]:
    """Publish as the runner does: synchronously, inside a running loop, in a worker thread."""

    async def run() -> list[Event]:
        events = []
        for n, experiment_id in enumerate(experiments):
            events.append(event_bus().publish(EventType.SWEEP_PROGRESS, experiment_id=experiment_id, done=n))
            if pause:
                await asyncio.sleep(pause)
        return events

    return asyncio.run(run())


async def publish(experiments: list[int], pause: float = 0.0) -> list[Event]:
    return await asyncio.to_thread(publish_in_worker, experiments, pause)


async def test_events_from_a_worker_arrive_in_order_with_increasing_ids(mode, browser) -> None:
    communicator = await browser.open("/ws/experiments/1/")
    events = await publish([1, 2, 1, 1, 2, 1])
    ours = [e for e in events if e.experiment_id == 1]
    received = [await communicator.receive_json_from(timeout=10) for _ in ours]
    assert received == [e.to_dict() for e in ours]
    assert [r["id"] for r in received] == sorted({r["id"] for r in received})
    assert await communicator.receive_nothing(timeout=0.3)  # experiment 2's are not sent here
    await communicator.disconnect()


async def test_a_reconnect_replays_exactly_the_missed_events_then_goes_live(mode, browser) -> None:
    communicator = await browser.open("/ws/experiments/1/")
    seen = await receive_ids(communicator, len(await publish([1, 1, 1])))
    await communicator.disconnect()

    missed = await publish([1, 2, 1])
    assert await asyncio.to_thread(flush_publisher, 10)
    communicator = await browser.open(f"/ws/experiments/1/?after={seen[-1]}")
    assert await receive_ids(communicator, 2) == [e.id for e in missed if e.experiment_id == 1]

    live = await publish([1])
    assert await receive_ids(communicator, 1) == [live[0].id]
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_joining_during_a_busy_sweep_loses_none_and_repeats_none(mode, browser) -> None:
    sweep = asyncio.create_task(publish([1, 2] * 150, pause=0.001))
    while len(await asyncio.to_thread(event_bus().recent, 1)) < 20:
        await asyncio.sleep(0.005)
    after = (await asyncio.to_thread(event_bus().recent, 1))[5].id
    communicator = await browser.open(f"/ws/experiments/1/?after={after}")
    await sweep
    expected = [e.id for e in await asyncio.to_thread(event_bus().recent, 1, after)]
    assert await receive_ids(communicator, len(expected)) == expected
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_several_workers_at_once_still_give_one_ordered_stream(mode, browser) -> None:
    communicator = await browser.open("/ws/experiments/1/")
    await asyncio.gather(*(publish([1] * 50) for _ in range(4)))
    expected = [e.id for e in await asyncio.to_thread(event_bus().recent, 1)]
    assert len(expected) == 200
    assert await receive_ids(communicator, 200) == expected
    await communicator.disconnect()


def publish_in_forked_worker(experiments: list[int]) -> int | None:
    """Publish from a forked process that exits at once, as RQ's work horse does."""

    def work() -> None:
        code = 1
        try:
            publish_in_worker(experiments)
            code = 0 if flush_publisher(10) else 2
        finally:
            os._exit(code)

    process = multiprocessing.get_context("fork").Process(target=work)
    process.start()
    process.join(30)
    return process.exitcode


@pytest.mark.parametrize("mode", ["redis"], indirect=True)
async def test_events_from_a_worker_process_reach_the_browser(mode, browser) -> None:
    communicator = await browser.open("/ws/experiments/1/")
    assert await asyncio.to_thread(publish_in_forked_worker, [1, 2, 1]) == 0
    expected = [e.id for e in await asyncio.to_thread(event_bus().recent, 1)]
    assert len(expected) == 2
    assert await receive_ids(communicator, 2) == expected
    await communicator.disconnect()


@pytest.mark.parametrize("mode", ["redis"], indirect=True)
async def test_events_the_layer_dropped_are_read_from_the_bus(mode, browser) -> None:
    # A bus of its own keeps events in the same Redis without forwarding them: as if dropped.
    dropping = RedisEventBus(workers.TEST_REDIS_URL)
    communicator = await browser.open("/ws/experiments/1/")
    lost = dropping.publish(EventType.RUN_STARTED, experiment_id=1)
    after_gap = await publish([1])
    assert await receive_ids(communicator, 2) == [lost.id, after_gap[0].id]  # the gap is read at once

    # Published from this loop without yielding: both are stored before the consumer runs.
    forwarded = event_bus().publish(EventType.RUN_COMPLETED, experiment_id=1)
    lost_last = dropping.publish(EventType.RUN_COMPLETED, experiment_id=1)
    assert await receive_ids(communicator, 2) == [forwarded.id, lost_last.id]  # the tail once settled
    await communicator.disconnect()


async def test_the_events_stream_carries_every_experiment(mode, browser) -> None:
    communicator = await browser.open("/ws/events/")
    events = await publish([1, 2, 3])
    received = [await communicator.receive_json_from(timeout=10) for _ in events]
    assert [(r["id"], r["experiment_id"]) for r in received] == [(e.id, e.experiment_id) for e in events]
    await communicator.disconnect()

    later = await publish([4])
    communicator = await browser.open(f"/ws/events/?after={events[-1].id}")
    assert await receive_ids(communicator, 1) == [later[0].id]
    await communicator.disconnect()


async def test_without_after_the_kept_events_are_replayed_first(mode, browser) -> None:
    earlier = await publish([1, 1])
    communicator = await browser.open("/ws/experiments/1/?after=oops")
    assert await receive_ids(communicator, 2) == [e.id for e in earlier]
    await communicator.disconnect()


@pytest.mark.parametrize("path", ["/ws/experiments/1/", "/ws/events/"])
async def test_an_anonymous_visitor_is_closed_with_4401(mode, path, stranger) -> None:
    communicator = stranger.socket(path)
    await communicator.connect(timeout=5)
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
    await publish([1])
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_a_socket_from_another_site_is_refused(mode, browser) -> None:
    communicator = browser.socket("/ws/events/", origin=b"http://evil.example")
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


def test_publishing_while_nobody_listens_keeps_events_for_later(mode) -> None:
    errors: list[BaseException] = []
    worker = threading.Thread(target=lambda: errors.extend(_try(publish_in_worker, [1, 1])))
    started = time.monotonic()
    worker.start()
    worker.join(10)
    assert not errors and time.monotonic() - started < 2
    assert flush_publisher(10)
    assert len(event_bus().recent(1)) == 2


def _try(func, *args) -> list[BaseException]:
    try:
        func(*args)
    except BaseException as exc:
        return [exc]
    return []


async def test_a_removed_member_stops_hearing_the_projects_events(mode, browser) -> None:
    experiment_socket = await browser.open("/ws/experiments/1/")
    events_socket = await browser.open("/ws/events/")
    before = await publish([1])
    assert await receive_ids(experiment_socket, 1) == [before[0].id]
    assert await receive_ids(events_socket, 1) == [before[0].id]

    membership = await sync_to_async(Membership.objects.get)(user__username="alice")
    await sync_to_async(membership.remove)()

    # The experiment's stream closes as if the experiment did not exist.
    assert await experiment_socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    # The all-events stream stays open but no longer shows the project's experiments.
    await publish([1, 2])
    assert await events_socket.receive_nothing(timeout=SETTLE_S + 0.5)
    await events_socket.disconnect()


async def test_removing_someone_else_leaves_a_members_streams_alone(mode, browser) -> None:
    communicator = await browser.open("/ws/experiments/1/")
    project = await sync_to_async(Project.objects.get)()
    bob = await sync_to_async(User.objects.create_user)("bob")
    membership = await sync_to_async(project.add_member)(bob, "editor")
    await sync_to_async(membership.remove)()
    events = await publish([1])
    assert await receive_ids(communicator, 1) == [events[0].id]
    await communicator.disconnect()
