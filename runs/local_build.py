"""The bundled model's build, run in the background by `make run` so that the web
pages are up at once (building llama.cpp takes 4 to 20 minutes on two cores).

The build command writes its output to VAR_DIR/local-model-build.log; a status file
beside it holds the state, the current step (the log's last line) and the start:
what the dashboard and the terminal show while it builds.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings

BUILDING, READY, FAILED = "building", "ready", "failed"


def status_file() -> Path:
    return Path(settings.VAR_DIR) / "local-model-build.json"


def log_file() -> Path:
    return Path(settings.VAR_DIR) / "local-model-build.log"


def build_command() -> list[str]:
    """LOCAL_MODEL_BUILD_COMMAND, else the install script for this interpreter's venv
    (it returns in seconds when everything is installed already)."""
    configured = os.environ.get("LOCAL_MODEL_BUILD_COMMAND")
    if configured:
        return ["bash", "-c", configured]
    venv = Path(sys.executable).parent.parent
    return ["bash", str(Path(settings.BASE_DIR) / "scripts" / "install_local_model.sh"), str(venv)]


@dataclass
class BuildStatus:
    state: str
    step: str
    started_at: float
    finished_at: float | None = None

    @property
    def elapsed_s(self) -> int:
        return int((self.finished_at or time.time()) - self.started_at)

    @property
    def elapsed(self) -> str:
        minutes, seconds = divmod(self.elapsed_s, 60)
        return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def read_status() -> BuildStatus | None:
    try:
        return BuildStatus(**json.loads(status_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


class Build:
    """One run of the build command, watched without blocking the caller."""

    def __init__(self, command: list[str] | None = None):
        self.command = command or build_command()
        self.process: subprocess.Popen | None = None
        self.status = BuildStatus(state=BUILDING, step="starting", started_at=time.time())

    def start(self) -> Build:
        status_file().parent.mkdir(parents=True, exist_ok=True)
        with log_file().open("w") as log:
            # Its own process group: stopping `make run` stops the compiler under pip too.
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=settings.BASE_DIR,
                start_new_session=True,
            )
        self._write()
        return self

    def poll(self) -> BuildStatus:
        """The state now; the status file is refreshed on each call."""
        if self.status.state == BUILDING and self.process is not None:
            self.status.step = last_line(log_file()) or self.status.step
            code = self.process.poll()
            if code is not None:
                self.status.state = READY if code == 0 else FAILED
                self.status.finished_at = time.time()
            self._write()
        return self.status

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)

    def _write(self) -> None:
        status_file().write_text(json.dumps(asdict(self.status)))


def last_line(path: Path, tail: int = 4096) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - tail))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def quoted(command: list[str]) -> str:
    return shlex.join(command)
