import pytest

from tests.llm_stub import LLMStub


@pytest.fixture
def llm_stub():
    with LLMStub() as stub:
        yield stub


@pytest.fixture
def alice(db):
    from tests.factories import make_user

    return make_user("alice", superuser=True)


@pytest.fixture
def bob(db):
    from tests.factories import make_user

    return make_user("bob")
