"""The LLM judge against a loopback server: replies read strictly, structured output
asked for where the endpoint's adapter can, and a plainer request where the server
turns it down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.adapters import ADAPTERS, OpenAICompatAdapter
from engine.gateway import Gateway
from engine.scorers import ScorerCallError, build_scorer
from engine.scorers.llm_judge import RATING_SCHEMA
from engine.types import AdapterError, EndpointConfig, ScoreContext, ScorerSpec
from tests.llm_stub import LLMStub

ITEM = {"question": "What is the capital of France?"}


@pytest.fixture
def plain_adapter() -> Iterator[str]:
    """An OpenAI-compatible adapter that declares no structured output."""

    class PlainAdapter(OpenAICompatAdapter):
        can_structured_output = False

    ADAPTERS["openai-plain"] = PlainAdapter
    yield "openai-plain"
    del ADAPTERS["openai-plain"]


def judge(**config):
    return build_scorer(ScorerSpec(type="llm_judge", name="judge", config=config))


async def rate(stub: LLMStub, scorer=None, adapter: str = "openai", output: str = "Paris"):
    endpoint = EndpointConfig(
        name="bob-llama", base_url=stub.base_url, default_model="stub-small", adapter=adapter
    )
    async with Gateway() as gateway:
        context = ScoreContext(reference="Paris", endpoint=endpoint, llm=gateway)
        return await (scorer or judge()).score_async(ITEM, output, context)


# -- replies ------------------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("reply", "rating"),
    [
        ('{"rating": 8}', 8),
        ("Rating: 8", 8),
        ("The answer is correct and complete.\nRating: 9", 9),
    ],
)
async def test_a_reply_in_a_fixed_form_is_a_rating(stub: LLMStub, reply: str, rating: int) -> None:
    stub.script(reply)
    outcome = await rate(stub)
    assert outcome.value == pytest.approx((rating - 1) / 9)
    assert outcome.details["rating"] == rating and outcome.details["raw"] == [reply]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "reply",
    [
        "The answer to the task is 1.",  # chatter with a number
        "I would say it deserves 8 out of 10 because it is right.",
        "The answer is good.",  # no number at all
        "",
    ],
)
async def test_a_reply_without_a_fixed_form_is_a_judge_error_that_keeps_it(stub: LLMStub, reply: str) -> None:
    stub.script(reply)
    with pytest.raises(ScorerCallError, match="not a rating in the form") as error:
        await rate(stub)
    assert error.value.details["raw"] == [reply]
    assert error.value.details["ratings"] == [None]
    assert error.value.tokens_in > 0  # the judge was paid for, rating or not


# -- structured output --------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_judge_asks_for_a_json_schema_when_the_adapter_can(stub: LLMStub) -> None:
    stub.script('{"rating": 7}')
    outcome = await rate(stub)
    response_format = stub.requests[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"] == RATING_SCHEMA
    assert RATING_SCHEMA["properties"]["rating"]["enum"] == list(range(1, 11))
    assert outcome.details["structured"] == "json_schema"


@pytest.mark.asyncio
async def test_an_adapter_without_structured_output_gets_a_plain_request(
    stub: LLMStub, plain_adapter: str
) -> None:
    stub.script("Rating: 7")
    outcome = await rate(stub, adapter=plain_adapter)
    assert "response_format" not in stub.requests[0]
    assert outcome.details["structured"] is None and outcome.details["rating"] == 7


@pytest.mark.asyncio
async def test_structured_output_can_be_turned_off(stub: LLMStub) -> None:
    stub.script("7")
    await rate(stub, judge(structured=False))
    assert "response_format" not in stub.requests[0]


@pytest.mark.asyncio
async def test_a_server_that_knows_only_json_object_is_asked_in_that_form(stub: LLMStub) -> None:
    stub.response_formats = ("json_object",)  # llama-cpp-python's server
    scorer = judge()
    stub.script('{"rating": 6}', '{"rating": 9}')
    first = await rate(stub, scorer)
    second = await rate(stub, scorer, output="Lyon")
    kinds = [r["response_format"]["type"] for r in stub.requests]
    # Refused once, then the scorer asks in the form the server took.
    assert kinds == ["json_schema", "json_object", "json_object"]
    assert stub.requests[1]["response_format"]["schema"] == RATING_SCHEMA
    assert (first.details["structured"], first.details["rating"]) == ("json_object", 6)
    assert (second.details["structured"], second.details["rating"]) == ("json_object", 9)


@pytest.mark.asyncio
async def test_a_server_that_refuses_every_form_is_asked_plainly(stub: LLMStub) -> None:
    stub.response_formats = ()
    scorer = judge()
    stub.script("Rating: 4", "Rating: 5")
    first = await rate(stub, scorer)
    await rate(stub, scorer, output="Lyon")
    sent = [(r.get("response_format") or {}).get("type") for r in stub.requests]
    assert sent == ["json_schema", "json_object", None, None]
    assert first.details["structured"] is None and first.details["rating"] == 4


@pytest.mark.asyncio
async def test_another_client_error_is_not_taken_for_a_refusal(stub: LLMStub) -> None:
    stub.fail_next("status", status=400, body='{"error": {"message": "model stub-huge not found"}}')
    with pytest.raises(AdapterError, match="HTTP 400"):
        await rate(stub)
    assert stub.calls == 1
