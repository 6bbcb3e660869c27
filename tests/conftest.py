import pytest

from tests.llm_stub import LLMStub

pytest_plugins = ["tests.fixtures_local_model"]


@pytest.fixture
def llm_stub():
    with LLMStub() as stub:
        yield stub


@pytest.fixture
def alice(db):
    """alice runs the team's project (its admin) and the server (a superuser)."""
    from projects.models import Role
    from tests.factories import add_member, make_user, team_project

    user = make_user("alice", superuser=True)
    add_member(team_project(), user, Role.ADMIN)
    return user


@pytest.fixture
def bob(db):
    """bob is on the team: an editor of its project."""
    from projects.models import Role
    from tests.factories import add_member, make_user, team_project

    user = make_user("bob")
    add_member(team_project(), user, Role.EDITOR)
    return user


@pytest.fixture
def distributed(settings, transactional_db):
    """Distributed mode for one test: Redis queues and separate RQ worker processes
    on the PostgreSQL test database. Skipped on SQLite (one machine only)."""
    from django.db import connection

    from tests import workers

    if connection.vendor != "postgresql":
        pytest.skip("distributed mode runs on PostgreSQL (the PostgreSQL pass covers it)")
    settings.REDIS_URL = workers.TEST_REDIS_URL
    # django-rq read RQ_QUEUES at import: change the URLs in place, and put them back.
    saved = {name: queue["URL"] for name, queue in settings.RQ_QUEUES.items()}
    for queue in settings.RQ_QUEUES.values():
        queue["URL"] = workers.TEST_REDIS_URL
    workers.flush_test_redis()
    pool = workers.WorkerPool()
    yield pool
    pool.stop()
    workers.flush_test_redis()
    for name, url in saved.items():
        settings.RQ_QUEUES[name]["URL"] = url


@pytest.fixture(autouse=True)
def _no_jobs_left_behind():
    """A job still running after its test would write into the next test's database."""
    yield
    from runs.queue import wait_for_in_process_jobs

    assert wait_for_in_process_jobs(timeout=60), "in-process jobs still running after the test"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The default PBKDF2 takes ~1 s per user on this machine; tests only need a hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
