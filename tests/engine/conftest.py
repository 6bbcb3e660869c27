from collections.abc import Iterator

import pytest

from tests.llm_stub import LLMStub


@pytest.fixture(scope="module")
def shared_stub() -> Iterator[LLMStub]:
    # One server per module: stopping one waits up to 0.5 s for its poll loop.
    with LLMStub() as stub:
        yield stub


@pytest.fixture
def stub(shared_stub: LLMStub) -> LLMStub:
    """The module's stub, as the constructor left it: reset() puts back every setting,
    script, fault, count and hold an earlier test left, so no test depends on order."""
    shared_stub.reset()
    return shared_stub
