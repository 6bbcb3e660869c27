"""Real RQ workers in separate processes, pointed at the test database and a
Redis database of their own, for tests of the distributed mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_database_url() -> str:
    s = connection.settings_dict
    if s["ENGINE"] != "django.db.backends.postgresql":
        raise RuntimeError("distributed tests need PostgreSQL")
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def flush_test_redis() -> None:
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()


class WorkerPool:
    """Starts `python manage.py rqworker` processes; stops (or kills) them."""

    def __init__(self, queues: tuple[str, ...] = ("default", "sweeps", "webhooks"), env: dict | None = None):
        self.queues = queues
        self.env = env or {}
        self.procs: list[subprocess.Popen] = []
        # A file, not a pipe: nobody reads a pipe, and a full one blocks the worker.
        self.log = tempfile.NamedTemporaryFile(prefix="rqworker-", suffix=".log", delete=False)

    def start(self, count: int = 1) -> list[subprocess.Popen]:
        env = dict(
            os.environ,
            DATABASE_URL=test_database_url(),
            REDIS_URL=TEST_REDIS_URL,
            SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-insecure-secret-key-change-me"),
            WEBHOOK_ALLOW_PRIVATE="true",
            PYTHONUNBUFFERED="1",
            **self.env,
        )
        env.pop("DJANGO_SETTINGS_MODULE", None)
        started = []
        for _ in range(count):
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "rqworker", *self.queues, "--with-scheduler"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            self.procs.append(proc)
            started.append(proc)
        time.sleep(1.5)  # let them register with Redis before jobs arrive
        return started

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and its work horse (RQ forks one per job, in a session
        of its own), as a crashed machine would lose both."""
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
