"""runs.local_build: the background build's status, step and end."""

import time

from runs.local_build import BUILDING, FAILED, READY, Build, read_status


def wait_done(build: Build, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while build.poll().state == BUILDING:
        assert time.monotonic() < deadline, "the build command did not end"
        time.sleep(0.05)
    return build.status


def test_a_build_that_succeeds_is_ready_with_its_last_step(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    build = Build(["bash", "-c", "echo 'step one'; echo 'step two'"]).start()
    assert wait_done(build).state == READY
    status = read_status()
    assert (status.state, status.step) == (READY, "step two") and status.finished_at >= status.started_at


def test_a_build_that_fails_says_so(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    assert wait_done(Build(["bash", "-c", "echo 'no compiler'; exit 3"]).start()).state == FAILED
    assert read_status().step == "no compiler"


def test_stopping_a_build_ends_its_whole_process_group(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    build = Build(["bash", "-c", "sleep 30 & wait"]).start()
    build.stop()
    assert build.process.poll() is not None


def test_the_elapsed_time_reads_in_minutes_and_seconds():
    from runs.local_build import BuildStatus

    assert BuildStatus(BUILDING, "x", started_at=0, finished_at=130).elapsed == "2 min 10 s"
    assert BuildStatus(BUILDING, "x", started_at=0, finished_at=9).elapsed == "9 s"
