"""Where jobs go: RQ queues when REDIS_URL is set, an in-process thread pool otherwise.

Both paths run the same job functions after the current transaction commits,
so a web request that launches a sweep returns at once in either mode.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from rq import Worker

logger = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pending: set[Future] = set()
_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child (a test server, an RQ work horse) has none of its parent's
    threads: drop the pools that would wait on them forever."""
    global _pool, _pending, _lock
    _pool, _pending, _lock = None, set(), threading.Lock()
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


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def distributed() -> bool:
    return bool(settings.REDIS_URL)


def enqueue(func: Callable[..., Any], *args: Any, queue: str = "default") -> None:
    if distributed():
        import django_rq

        # django-rq's on_db_commit mode defers the enqueue to the commit.
        django_rq.get_queue(queue).enqueue(
            func, *args, job_timeout=settings.RQ_QUEUES[queue]["DEFAULT_TIMEOUT"]
        )
    else:
        transaction.on_commit(lambda: submit_in_process(func, *args))


def submit_in_process(func: Callable[..., Any], *args: Any) -> Future:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(settings.INPROCESS_WORKERS, thread_name_prefix="promptlooper-job")
        future = _pool.submit(_run_job, func, args)
        _pending.add(future)
    future.add_done_callback(_pending.discard)
    return future


def _run_job(func: Callable[..., Any], args: tuple) -> Any:
    close_old_connections()
    try:
        return func(*args)
    except Exception:
        logger.exception("Job %s%r failed", getattr(func, "__name__", func), args)
        raise
    finally:
        connections.close_all()


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
