"""Real RQ workers in separate processes, pointed at the test database and a
Redis database of their own, for tests of the distributed mode."""

from __future__ import annotations

import os
import signal
import socket
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
                stdout=self.log,
                stderr=subprocess.STDOUT,  # a pipe nobody reads fills up and blocks the worker
                start_new_session=True,
            )
            self.procs.append(proc)
            started.append(proc)
        self.wait_until_listening(started)
        return started

    def wait_until_listening(self, procs: list[subprocess.Popen], timeout: float = 120) -> None:
        """Until each worker has registered and waits for jobs. A fixed sleep was
        not enough on a loaded machine: a worker still starting when the jobs came
        left them all to the other one (test_two_workers_share_one_sweep)."""
        from rq import Worker

        conn = redis.Redis.from_url(TEST_REDIS_URL)
        wanted = {proc.pid for proc in procs}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in procs:
                assert proc.poll() is None, (
                    f"rqworker {proc.pid} exited: {Path(self.log.name).read_text()[-2000:]}"
                )
            idle = {w.pid for w in Worker.all(connection=conn) if w.get_state() == "idle"}
            if wanted <= idle:
                return
            time.sleep(0.05)
        raise AssertionError(f"rqworkers {sorted(wanted)} did not start listening in {timeout} s")

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SingleMachineServer:
    """The web server as `make run` starts it (Daphne, no Redis: the in-process
    worker), on the test's database (SQLite or PostgreSQL), in a process of its own."""

    def __init__(self, env: dict | None = None):
        self.port = free_port()
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="daphne-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SingleMachineServer:
        s = connection.settings_dict
        database = test_database_url() if connection.vendor == "postgresql" else f"sqlite:///{s['NAME']}"
        env = dict(os.environ, DATABASE_URL=database, PYTHONUNBUFFERED="1", **self.env)
        env.pop("REDIS_URL", None)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "promptlooper_site.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_until_listening()
        return self

    def _wait_until_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, Path(self.log.name).read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the server did not listen on {self.port}")

    def kill(self) -> None:
        """SIGKILL, and reap it: a zombie would still look alive to a liveness check."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
