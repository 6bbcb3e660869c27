"""A sweep's estimate asks the adapter how it counts tokens and each scorer what it calls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.adapters import ADAPTERS, BaseAdapter, register_adapter
from engine.scorers import SCORERS, BaseScorer, ModelCalls, register_scorer
from engine.sweep import estimate
from engine.types import Item, ScorerSpec, Stage

STAGES = [Stage(name="answer", user="Q: {{ q }}")]  # "Q: abcd" = 7 chars = 2 tokens
ITEMS = [Item(id=i, input={"q": "abcd"}, reference="x") for i in range(3)]


@pytest.fixture
def registries() -> Iterator[None]:
    adapters, scorers = dict(ADAPTERS), dict(SCORERS)
    yield
    ADAPTERS.clear()
    ADAPTERS.update(adapters)
    SCORERS.clear()
    SCORERS.update(scorers)


def test_the_default_count_is_about_four_characters_a_token() -> None:
    assert BaseAdapter.estimate_tokens("") == 0
    assert BaseAdapter.estimate_tokens("abcde") == 2
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcdefgh"}]
    assert BaseAdapter.estimate_call_tokens(messages) == 3


def test_an_adapter_that_counts_characters_changes_the_estimate(registries: None) -> None:
    @register_adapter("alice-chars")
    class CharAdapter(BaseAdapter):
        @classmethod
        def estimate_tokens(cls, text: str) -> int:
            return len(text)

    default = estimate([{"max_tokens": 10}], STAGES, ITEMS)
    by_chars = estimate([{"max_tokens": 10}], STAGES, ITEMS, adapter="alice-chars")
    assert default["prompt_tokens"] == 3 * 2
    assert by_chars["prompt_tokens"] == 3 * len("Q: abcd")
    assert by_chars["max_tokens"] == by_chars["prompt_tokens"] + 3 * 10


def test_an_unknown_adapter_name_counts_as_the_default() -> None:
    assert estimate([{}], STAGES, ITEMS, adapter="nobody") == estimate([{}], STAGES, ITEMS)


def test_a_scorer_that_calls_a_model_is_priced_from_its_model_calls(registries: None) -> None:
    @register_scorer
    class EchoJudge(BaseScorer):
        type = "bob_echo_judge"

        @classmethod
        def model_calls(cls, config: dict) -> ModelCalls:
            return ModelCalls(
                prompt="{{ ref }}!!!",  # "x!!!" = 1 token
                calls=config.get("asks", 1),
                max_tokens=5,
                variables=lambda input_data, reference: {"ref": reference},
            )

    plain = estimate([{"max_tokens": 10}], STAGES, ITEMS)
    judged = estimate(
        [{"max_tokens": 10}], STAGES, ITEMS, scorers=[ScorerSpec("bob_echo_judge", config={"asks": 2})]
    )
    assert judged["judge_calls"] == 3 * 2
    assert judged["calls"] == plain["calls"] + 3 * 2
    # Each ask: its rendered prompt, plus the answer it is shown (counted at the stage's max_tokens).
    judge_prompt = 2 * 3 * (1 + 10)
    assert judged["prompt_tokens"] - plain["prompt_tokens"] == judge_prompt
    assert judged["max_tokens"] - plain["max_tokens"] == judge_prompt + 2 * 3 * 5


def test_scorers_that_call_no_model_cost_nothing() -> None:
    free = [ScorerSpec("keyword", config={"required_present": ["x"]}), ScorerSpec("human")]
    assert estimate([{}], STAGES, ITEMS, scorers=free) == estimate([{}], STAGES, ITEMS)
    assert SCORERS["keyword"].model_calls({}) is None


def test_the_llm_judge_reports_its_prompt_samples_and_answer_length() -> None:
    calls = SCORERS["llm_judge"].model_calls({"samples": 3, "max_tokens": 12, "prompt": "Rate {{ output }}"})
    assert (calls.prompt, calls.calls, calls.max_tokens) == ("Rate {{ output }}", 3, 12)
    defaults = SCORERS["llm_judge"].model_calls({})
    assert (defaults.calls, defaults.max_tokens) == (1, 32) and "{{ output }}" in defaults.prompt
    assert calls.variables({"country": "Peru"}, "Lima") == {
        "input": "country: Peru",
        "output": "",
        "reference": "Lima",
    }
