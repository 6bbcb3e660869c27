"""LLM judge: a model rates the output 1-10 through the (cached) LLM client.

Here a scripted client stands in for the gateway, to see what the judge asks and
how it reads the replies; tests/engine/test_judge_*.py run it against a loopback server."""

from __future__ import annotations

import pytest

from engine.scorers import ScorerCallError, build_scorer
from engine.scorers.llm_judge import DEFAULT_PROMPT, parse_rating, render_input
from engine.types import AdapterResponse, CallResult, EndpointConfig, ScoreContext, ScorerError, ScorerSpec

RUN_ENDPOINT = EndpointConfig(name="vllm", base_url="http://127.0.0.1:8000/v1", default_model="qwen")
JUDGE_ENDPOINT = EndpointConfig(name="judge", base_url="http://127.0.0.1:9000/v1", default_model="big")


class FakeJudge:
    """An LLMClient whose completions are scripted answers; it records each call."""

    def __init__(self, *answers: str, cached: bool = False):
        self.answers = list(answers)
        self.cached = cached
        self.calls: list[dict] = []

    async def complete(self, endpoint, messages, model, params, sample_index=0):
        self.calls.append({"endpoint": endpoint.name, "messages": messages, "model": model, "params": params})
        text = self.answers.pop(0)
        response = AdapterResponse(text=text, tokens_in=120, tokens_out=3, latency_ms=5.0, model=model)
        return CallResult(response=response, config_hash="abc", cached=self.cached)

    async def embed(self, endpoint, texts, model=""):
        raise AssertionError("the judge never asks for embeddings")

    @property
    def prompt(self) -> str:
        return self.calls[-1]["messages"][-1]["content"]


def judge(**config):
    return build_scorer(ScorerSpec(type="llm_judge", name="judge", config=config))


def context(llm, reference="Paris", endpoint=RUN_ENDPOINT, endpoints=None):
    return ScoreContext(reference=reference, endpoint=endpoint, endpoints=endpoints or {}, llm=llm)


ITEM = {"question": "What is the capital of France?"}


@pytest.mark.asyncio
async def test_a_rating_maps_to_a_score_with_the_raw_answer_kept():
    llm = FakeJudge("Rating: 7")
    outcome = await judge().score_async(ITEM, "Paris", context(llm))
    assert outcome.value == pytest.approx(6 / 9)
    assert outcome.details == {
        "raw": ["Rating: 7"],
        "ratings": [7.0],
        "rating": 7.0,
        "spread": None,
        "unparsed": 0,
        "endpoint": "vllm",
        "model": "qwen",
        "structured": "json_schema",
        "cached": False,
    }


@pytest.mark.asyncio
async def test_the_extremes_map_to_zero_and_one():
    llm = FakeJudge("1", "10/10")
    assert (await judge().score_async(ITEM, "Lyon", context(llm))).value == 0.0
    assert (await judge().score_async(ITEM, "Paris", context(llm))).value == 1.0


@pytest.mark.asyncio
async def test_tokens_of_a_fresh_call_count_and_a_cached_one_is_free():
    fresh = await judge().score_async(ITEM, "Paris", context(FakeJudge("8")))
    assert (fresh.tokens_in, fresh.tokens_out) == (120, 3)
    cached = await judge().score_async(ITEM, "Paris", context(FakeJudge("8", cached=True)))
    assert (cached.tokens_in, cached.tokens_out) == (0, 0)
    assert cached.details["cached"] is True


@pytest.mark.asyncio
async def test_the_default_prompt_shows_input_output_and_reference():
    llm = FakeJudge("9")
    await judge().score_async({"question": "Capital?", "tags": ["geo", "東京"]}, "Paris", context(llm))
    call = llm.calls[0]
    assert call["model"] == "qwen"
    assert call["params"]["temperature"] == 0.0 and call["params"]["max_tokens"] == 32
    assert call["params"]["response_format"]["type"] == "json_schema"
    assert len(call["messages"]) == 1 and call["messages"][0]["role"] == "user"
    assert 'question: Capital?\ntags: ["geo", "東京"]' in llm.prompt
    assert "Reference answer:\nParis" in llm.prompt
    assert "Answer to grade:\nParis" in llm.prompt
    assert "from 1 (wrong or useless) to 10" in llm.prompt
    assert 'Reply with JSON only, in the form {"rating": N}' in llm.prompt


@pytest.mark.asyncio
async def test_the_default_prompt_leaves_out_a_missing_reference():
    llm = FakeJudge("9")
    await judge().score_async(ITEM, "Paris", context(llm, reference=""))
    assert "Reference" not in llm.prompt
    assert "reference" not in llm.prompt


@pytest.mark.asyncio
async def test_a_custom_prompt_model_and_params_are_used():
    llm = FakeJudge("6")
    scorer = judge(
        prompt="Q: {{ input }}\nA: {{ output }}\nRate 1-10.",
        model="gpt-x",
        temperature=1,
        max_tokens=8,
        structured=False,
    )
    await scorer.score_async(ITEM, "Paris", context(llm))
    assert llm.prompt == "Q: question: What is the capital of France?\nA: Paris\nRate 1-10."
    assert llm.calls[0]["model"] == "gpt-x"
    assert llm.calls[0]["params"] == {"temperature": 1, "max_tokens": 8}


@pytest.mark.asyncio
async def test_the_prompt_is_rendered_not_trusted():
    llm = FakeJudge("6")
    # Jinja syntax inside the output is text for the judge, never executed.
    await judge().score_async(ITEM, "{{ 7*7 }}", context(llm))
    assert "{{ 7*7 }}" in llm.prompt


@pytest.mark.asyncio
async def test_the_sandbox_blocks_python_internals():
    scorer = judge(prompt="{{ output.__class__.__mro__ }}")
    with pytest.raises(ScorerError, match="prompt failed to render"):
        await scorer.score_async(ITEM, "Paris", context(FakeJudge("6")))


@pytest.mark.asyncio
async def test_a_named_judge_endpoint_is_looked_up():
    llm = FakeJudge("8")
    await judge(endpoint="judge").score_async(
        ITEM, "Paris", context(llm, endpoints={"judge": JUDGE_ENDPOINT})
    )
    assert (llm.calls[0]["endpoint"], llm.calls[0]["model"]) == ("judge", "big")


@pytest.mark.asyncio
async def test_naming_the_runs_own_endpoint_needs_no_lookup():
    llm = FakeJudge("8")
    await judge(endpoint="vllm").score_async(ITEM, "Paris", context(llm))
    assert llm.calls[0]["endpoint"] == "vllm"


@pytest.mark.asyncio
async def test_an_unknown_judge_endpoint_lists_the_known_ones():
    llm = FakeJudge("8")
    with pytest.raises(ScorerError, match="judge endpoint 'jduge' is not configured; known endpoints: judge"):
        await judge(endpoint="jduge").score_async(
            ITEM, "x", context(llm, endpoints={"judge": JUDGE_ENDPOINT})
        )
    assert llm.calls == []


@pytest.mark.asyncio
async def test_no_endpoint_at_all_is_an_error():
    with pytest.raises(ScorerError, match="no endpoint to judge with; set the 'endpoint' option"):
        await judge().score_async(ITEM, "x", context(FakeJudge("8"), endpoint=None))


@pytest.mark.asyncio
async def test_no_model_at_all_is_an_error():
    bare = EndpointConfig(name="bare", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ScorerError, match="no model to judge with; set the 'model' option"):
        await judge().score_async(ITEM, "x", context(FakeJudge("8"), endpoint=bare))


@pytest.mark.asyncio
async def test_no_llm_client_is_an_error():
    with pytest.raises(ScorerError, match="needs an LLM client"):
        await judge().score_async(ITEM, "x", context(None))


@pytest.mark.asyncio
async def test_an_answer_without_a_rating_is_a_scorer_error_that_keeps_the_tokens():
    with pytest.raises(ScorerCallError) as error:
        await judge().score_async(ITEM, "Paris", context(FakeJudge("The answer is good.")))
    assert isinstance(error.value, ScorerError)
    assert "reply is not a rating in the form" in str(error.value)
    assert "'The answer is good.'" in str(error.value)
    assert (error.value.tokens_in, error.value.tokens_out) == (120, 3)
    assert error.value.details["raw"] == ["The answer is good."]
    assert error.value.details["ratings"] == [None]


def test_sync_score_works_outside_an_event_loop():
    assert judge().score(ITEM, "Paris", context(FakeJudge("Rating: 9.5"))) == pytest.approx(8.5 / 9)


@pytest.mark.parametrize(
    ("answer", "rating"),
    [
        ('{"rating": 7}', 7),
        ('  {"rating": 10}\n', 10),
        ('{"rating": "8"}', 8),
        ('```json\n{"rating": 6}\n```', 6),
        ("Rating: 7", 7),
        ("rating = 4", 4),
        ("Rating: **8**", 8),
        ("**Rating:** 8", 8),
        ("Rating: 8/10", 8),
        ("The answer names the right city.\nRating: 9", 9),
        ("Rating: 3\nRating: 3", 3),
        ("7", 7),
        ("7.", 7),
        (" 7\n", 7),
        ("7/10", 7),
        ("8.5 / 10", 8.5),
        ("1", 1),
    ],
)
def test_the_fixed_forms_are_read(answer, rating):
    assert parse_rating(answer) == rating


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("", "not a rating in the form"),
        ("Excellent answer!", "not a rating in the form"),
        # Chatter with a number is never read as a rating: the "rated 1".
        ("The answer to the task is 1.", "not a rating in the form"),
        ("I'd give it 8 out of 10", "not a rating in the form"),
        ("Score: 9", "not a rating in the form"),
        ("My rating is 6.", "not a rating in the form"),
        ("7\n\nThe answer misses 2 details.", "not a rating in the form"),
        ("7 or 8", "not a rating in the form"),
        ('Sure! {"rating": 7}', "not a rating in the form"),
        ('{"rating": 7} because it is right', "not a rating in the form"),
        ('{"rating": ', "not a rating in the form"),
        ('{"score": 7}', 'JSON has no "rating"'),
        ('{"rating": "high"}', '"rating" is not a number'),
        ('{"rating": true}', '"rating" is not a number'),
        ("Rating: 3\nRating: 5", "several ratings \\(3, 5\\)"),
        ("0", "rating 0 is outside 1-10"),
        ("11", "rating 11 is outside 1-10"),
        ('{"rating": 85}', "rating 85 is outside 1-10"),
        ("Rating: -3", "rating -3 is outside 1-10"),
        ("0/10", "rating 0 is outside 1-10"),
    ],
)
def test_replies_without_a_rating_in_a_fixed_form_are_rejected(answer, message):
    with pytest.raises(ScorerError, match=message):
        parse_rating(answer)


def test_a_long_answer_is_cut_in_the_error():
    with pytest.raises(ScorerError) as error:
        parse_rating("no " * 200)
    assert len(str(error.value)) < 300 and str(error.value).endswith("…'")


def test_input_fields_render_as_lines_with_json_for_non_strings():
    assert (
        render_input({"city": "Zürich", "n": 3, "meta": {"a": None}})
        == 'city: Zürich\nn: 3\nmeta: {"a": null}'
    )
    assert render_input({}) == ""


def test_the_default_prompt_is_valid():
    assert judge(prompt=DEFAULT_PROMPT).options.prompt == DEFAULT_PROMPT


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"prompt": "Rate {{ answer }}: {{ output }}"}, "prompt uses answer; only \\{\\{ input \\}\\}"),
        ({"prompt": "Rate this: {{ output "}, "prompt line 1"),
        ({"prompt": "Rate the input {{ input }}"}, "never shows the judge the \\{\\{ output \\}\\}"),
        ({"temperature": 3}, "temperature must be between 0 and 2"),
        ({"max_tokens": 0}, "max_tokens must be 1 or more"),
        ({"max_tokens": "32"}, "'max_tokens' must be an integer"),
        ({"samples": 0}, "samples must be from 1 to 20"),
        ({"samples": 21}, "samples must be from 1 to 20"),
        ({"structured": "yes"}, "'structured' must be true/false"),
        ({"modle": "gpt"}, "unknown option 'modle'; allowed options: endpoint, model, prompt"),
    ],
)
def test_bad_configs_fail_at_validation(config, message):
    with pytest.raises(ScorerError, match=message):
        judge(**config)
