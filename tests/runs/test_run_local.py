"""`make run` on a fresh machine: the login page answers while the bundled model is
still building (the build faked by a slow command), and the dashboard and the
terminal say which step it is at and for how long."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.workers import free_port

FIRST_PAGE_WITHIN_S = 60
SLOW_BUILD = "echo 'compiling llama.cpp (a stand-in)'; sleep 120"


@pytest.fixture
def fresh_run(tmp_path):
    """run_local on an empty database and var/ folder, its model build a slow command."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.sqlite3'}",
        VAR_DIR=str(tmp_path / "var"),
        LOCAL_MODEL_BUILD_COMMAND=SLOW_BUILD,
    )
    port = free_port()
    command = [
        sys.executable,
        "manage.py",
        "run_local",
        "--port",
        str(port),
        "--model-port",
        str(free_port()),
    ]
    # Its output goes to a file, as SingleMachineServer's does (tests/workers.py): a pipe
    # nobody reads while it runs would fill up and stall it.
    log_path = tmp_path / "run_local.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        yield process, f"http://127.0.0.1:{port}", tmp_path / "var", started, log_path
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


def first_answer(url: str, process: subprocess.Popen, log_path: Path) -> httpx.Response:
    deadline = time.monotonic() + FIRST_PAGE_WITHIN_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            return httpx.get(url + "/accounts/login/", timeout=2)
        except httpx.HTTPError:
            time.sleep(0.2)  # polling for the server to come up; the deadline is the assertion
    raise AssertionError(f"no login page within {FIRST_PAGE_WITHIN_S} s")


def logged_in(url: str, var: Path) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=10)
    page = client.get("/accounts/login/").text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    password = (var / "admin-password.txt").read_text().strip()
    form = {"username": "admin", "password": password, "csrfmiddlewaretoken": token}
    assert client.post("/accounts/login/", data=form).status_code == 302
    return client


def test_a_fresh_make_run_serves_the_login_page_while_the_model_builds(fresh_run):
    process, url, var, started, log_path = fresh_run
    response = first_answer(url, process, log_path)
    assert response.status_code == 200 and "Log in" in response.text
    assert time.monotonic() - started < FIRST_PAGE_WITHIN_S
    status = json.loads((var / "local-model-build.json").read_text())
    assert status["state"] == "building"  # the 120 s build is far from done
    dashboard = logged_in(url, var).get("/").text
    assert "The bundled local model is building" in dashboard
    assert "compiling llama.cpp (a stand-in)" in dashboard and 'id="model-build-elapsed"' in dashboard
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    output = log_path.read_text()
    assert "Building the bundled model in the background" in output
    assert "Local model: building" in output and "compiling llama.cpp (a stand-in)" in output
    assert json.loads((var / "local-model-build.json").read_text())["state"] == "building"
    assert "sleep 120" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
