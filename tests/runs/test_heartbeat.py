"""A worker's heartbeat never waits for a run whose outcome is being written
(PostgreSQL: the two used to deadlock, and the sweep stalled a second each time)."""

import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from runs.control import heartbeat
from runs.models import Run, RunStatus
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db(transaction=True)


def held_runs(count: int) -> list[Run]:
    experiment = make_experiment(make_endpoint())
    return [
        Run.objects.create(
            experiment=experiment, config={"n": n}, config_hash=str(n), status=RunStatus.RUNNING, worker="w:1"
        )
        for n in range(count)
    ]


def test_a_heartbeat_marks_every_run_the_worker_holds():
    runs = held_runs(3)
    assert heartbeat("w:1") == 3
    assert all(run.heartbeat_at for run in Run.objects.filter(pk__in=[r.pk for r in runs]))
    assert heartbeat("someone-else") == 0


@pytest.mark.skipif("not connection.features.has_select_for_update_skip_locked")
def test_a_heartbeat_skips_a_run_another_transaction_is_finishing():
    first, second = held_runs(2)
    locked, release = threading.Event(), threading.Event()

    def finishing() -> None:  # as save_outcomes holds a run while it writes its outcome
        with transaction.atomic():
            Run.objects.filter(pk=first.pk).update(finished_at=timezone.now())
            locked.set()
            release.wait(30)
        connection.close()

    thread = threading.Thread(target=finishing)
    thread.start()
    try:
        assert locked.wait(10)
        assert heartbeat("w:1") == 1  # at once: the locked run is left to its writer
    finally:
        release.set()
        thread.join()
    assert Run.objects.get(pk=second.pk).heartbeat_at is not None
    assert Run.objects.get(pk=first.pk).heartbeat_at is None
