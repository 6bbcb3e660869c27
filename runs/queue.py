"""Where jobs go: RQ queues when REDIS_URL is set, an in-process thread pool otherwise.

Both paths run the same job functions after the current transaction commits,
so a web request that launches a sweep returns at once in either mode.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from rq import Worker

logger = logging.getLogger(__name__)

_pools: dict[str, ThreadPoolExecutor] = {}  # by queue name
_pending: set[Future] = set()
_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child (a test server, an RQ work horse) has none of its parent's
    threads: drop the pools that would wait on them forever."""
    global _pools, _pending, _lock
    _pools, _pending, _lock = {}, set(), threading.Lock()
    # asgiref's executor for sync_to_async(thread_sensitive=True) would keep
    # queueing ORM calls for a thread that did not come along.
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)


os.register_at_fork(after_in_child=_forget_after_fork)


class RecoveringWorker(Worker):
    """An RQ worker that also takes back the runs of workers that died and
    finishes their sweeps (now, and every SWEEP_RECOVERY_INTERVAL_S)."""

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        from runs.sweeps import start_recovery  # runs.sweeps imports this module

        start_recovery()


def redis_client() -> Any:
    # One client (and connection pool) per URL: every worker reads the flag
    # every poll, and a fresh client would open a connection each time.
    return _redis_client(settings.REDIS_URL)


@functools.cache
def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)  # its pool starts afresh in a forked child


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def distributed() -> bool:
    return bool(settings.REDIS_URL)


class RetryJob(Exception):
    """Raised by a job enqueued with `retry_in` to be run again after the next
    interval: by rq's Retry (and its scheduler) in distributed mode, by a timer
    in-process. The job's thread is free in the meantime."""


def enqueue(
    func: Callable[..., Any], *args: Any, queue: str = "default", retry_in: Sequence[float] = ()
) -> None:
    if distributed():
        import django_rq
        from rq import Retry

        retry = Retry(max=len(retry_in), interval=[int(math.ceil(s)) for s in retry_in]) if retry_in else None
        # django-rq's on_db_commit mode defers the enqueue to the commit.
        django_rq.get_queue(queue).enqueue(
            func, *args, job_timeout=settings.RQ_QUEUES[queue]["DEFAULT_TIMEOUT"], retry=retry
        )
    else:
        transaction.on_commit(lambda: submit_in_process(func, *args, queue=queue, retry_in=tuple(retry_in)))


def submit_in_process(
    func: Callable[..., Any], *args: Any, queue: str = "default", retry_in: tuple[float, ...] = ()
) -> Future:
    with _lock:
        future = _pool_for(queue).submit(_run_job, func, args, queue, retry_in)
        _pending.add(future)
    future.add_done_callback(_pending.discard)
    return future


def _pool_for(queue: str) -> ThreadPoolExecutor:
    """Webhook deliveries get threads of their own: a slow receiver never holds up a sweep."""
    if queue not in _pools:
        size = settings.WEBHOOK_WORKERS if queue == "webhooks" else settings.INPROCESS_WORKERS
        _pools[queue] = ThreadPoolExecutor(size, thread_name_prefix=f"promptlooper-{queue}")
    return _pools[queue]


def _run_job(func: Callable[..., Any], args: tuple, queue: str, retry_in: tuple[float, ...]) -> Any:
    close_old_connections()
    try:
        return func(*args)
    except RetryJob as exc:
        if not retry_in:
            logger.warning("Job %s%r gave up: %s", getattr(func, "__name__", func), args, exc)
            return None
        _submit_later(retry_in[0], func, args, queue, retry_in[1:])
        return None
    except Exception:
        logger.exception("Job %s%r failed", getattr(func, "__name__", func), args)
        raise
    finally:
        connections.close_all()


def _submit_later(delay: float, func: Callable[..., Any], args: tuple, queue: str, retry_in: tuple) -> None:
    """A timer, not a sleeping thread; a placeholder keeps wait_for_in_process_jobs waiting for it."""
    placeholder: Future = Future()
    with _lock:
        _pending.add(placeholder)

    def fire() -> None:
        try:
            submit_in_process(func, *args, queue=queue, retry_in=retry_in)
        finally:
            with _lock:
                _pending.discard(placeholder)
            placeholder.set_result(None)

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()


def wait_for_in_process_jobs(timeout: float | None = None) -> bool:
    """Block until every in-process job (including ones they enqueue) is done."""
    while True:
        with _lock:
            pending = set(_pending)
        if not pending:
            return True
        done, not_done = wait(pending, timeout=timeout)
        if not_done:
            return False
