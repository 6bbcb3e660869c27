"""The scorer registry: building scorers from specs and rejecting bad configs."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Literal

import pytest

from engine.scorers import SCORERS, BaseScorer, build_scorer, register_scorer, validate_scorer
from engine.scorers.base import checked_score, describe_type, parse_options, run_sync
from engine.types import ScoreContext, ScoreOutcome, ScorerError, ScorerSpec


def test_every_bundled_scorer_is_registered_with_a_description():
    assert {"keyword", "format", "embedding", "llm_judge", "human"} <= set(SCORERS)
    for scorer_type, cls in SCORERS.items():
        assert cls.type == scorer_type
        assert cls.description


def test_token_spending_scorers_say_so():
    assert SCORERS["llm_judge"].costs_tokens
    assert SCORERS["embedding"].costs_tokens
    assert not SCORERS["keyword"].costs_tokens
    assert not SCORERS["human"].costs_tokens


def test_build_scorer_uses_the_spec_name_and_config():
    spec = ScorerSpec(type="keyword", name="mentions_paris", config={"required_present": ["Paris"]})
    scorer = build_scorer(spec)
    assert scorer.name == "mentions_paris"
    assert scorer.options.required_present == ["Paris"]
    assert scorer.score({}, "Paris is lovely", ScoreContext()) == 1.0


def test_a_scorer_without_name_is_named_after_its_type():
    assert build_scorer(ScorerSpec(type="human")).name == "human"


def test_unknown_scorer_type_lists_the_known_ones():
    with pytest.raises(ScorerError) as error:
        validate_scorer("keywords", {})
    message = str(error.value)
    assert "unknown scorer type 'keywords'" in message
    for known in ("embedding", "format", "human", "keyword", "llm_judge"):
        assert known in message


def test_unknown_option_key_is_rejected_naming_the_key_and_the_allowed_ones():
    with pytest.raises(ScorerError) as error:
        validate_scorer("keyword", {"required_presnt": ["Paris"]})
    message = str(error.value)
    assert "keyword scorer" in message
    assert "'required_presnt'" in message
    assert "required_present" in message and "whole_word" in message
    assert error.value.permanent


def test_wrong_option_type_says_what_is_allowed():
    with pytest.raises(ScorerError, match="'case_sensitive' must be true/false, got str 'yes'"):
        validate_scorer("keyword", {"required_present": ["a"], "case_sensitive": "yes"})
    with pytest.raises(ScorerError, match="must be a list of a string"):
        validate_scorer("keyword", {"required_present": "Paris"})
    with pytest.raises(ScorerError, match="must be a list of a string"):
        validate_scorer("keyword", {"required_present": ["Paris", 3]})


def test_config_must_be_an_object():
    with pytest.raises(ScorerError, match="config must be an object"):
        validate_scorer("keyword", ["Paris"])  # type: ignore[arg-type]


def test_a_missing_required_option_is_named():
    with pytest.raises(ScorerError, match="option 'check' is required"):
        validate_scorer("format", {})


def test_a_built_scorer_keeps_its_own_copy_of_the_config():
    config = {"required_present": ["Paris"]}
    scorer = build_scorer(ScorerSpec(type="keyword", config=config))
    config["required_present"].append("Lyon")
    assert scorer.options.required_present == ["Paris"]


@dataclasses.dataclass
class Knobs:
    count: int = 1
    ratio: float = 0.5
    label: str | None = None
    anything: Any = None


def test_option_types_are_strict_about_bools_and_numbers():
    assert parse_options("t", Knobs, {"ratio": 1}).ratio == 1
    with pytest.raises(ScorerError, match="'count' must be an integer"):
        parse_options("t", Knobs, {"count": True})
    with pytest.raises(ScorerError, match="'count' must be an integer"):
        parse_options("t", Knobs, {"count": 1.5})
    with pytest.raises(ScorerError, match="'ratio' must be a number"):
        parse_options("t", Knobs, {"ratio": False})
    with pytest.raises(ScorerError, match="'label' must be a string or null"):
        parse_options("t", Knobs, {"label": 3})
    assert parse_options("t", Knobs, {"label": None, "anything": []}).anything == []


def test_describe_type_names_literals_and_objects():

    assert describe_type(Literal["a", "b"]) == "one of 'a', 'b'"
    assert describe_type(dict[str, Any]) == "an object"
    assert describe_type(type(None)) == "null"


def test_scores_are_clamped_for_float_noise_and_rejected_when_far_out():
    assert checked_score(1.0000000001, "x") == 1.0
    assert checked_score(-1e-9, "x") == 0.0
    with pytest.raises(ScorerError, match="outside \\[0, 1\\]"):
        checked_score(1.5, "x")
    with pytest.raises(ScorerError, match="not a number"):
        checked_score(float("nan"), "x")
    with pytest.raises(ScorerError, match="not a number"):
        checked_score(True, "x")


class ScoreOnly(BaseScorer):
    """A minimal plug-in: only score(), no options, no details."""

    type = "test_score_only"
    description = "test"

    def score(self, input_data, output, context):
        return 0.25 if output else 2.0


class AsyncOnly(BaseScorer):
    type = "test_async_only"

    async def score_async(self, input_data, output, context):
        await asyncio.sleep(0)
        return self.outcome(0.75, {"seen": output})


class Nothing(BaseScorer):
    type = "test_nothing"


def test_register_scorer_adds_a_plugin_and_refuses_clashes():
    try:
        assert register_scorer(ScoreOnly) is ScoreOnly
        assert register_scorer(ScoreOnly) is ScoreOnly  # re-import is harmless
        assert build_scorer(ScorerSpec(type="test_score_only")).score({}, "x", ScoreContext()) == 0.25

        class Impostor(ScoreOnly):
            pass

        with pytest.raises(ValueError, match="already registered"):
            register_scorer(Impostor)
    finally:
        SCORERS.pop("test_score_only", None)

    class Untyped(BaseScorer):
        pass

    with pytest.raises(ValueError, match="needs a `type`"):
        register_scorer(Untyped)


def test_a_base_scorer_takes_no_options():
    with pytest.raises(ScorerError, match="unknown option 'x'; allowed options: \\(none\\)"):
        ScoreOnly({"x": 1})


@pytest.mark.asyncio
async def test_score_async_wraps_a_plain_score():
    outcome = await ScoreOnly().score_async({}, "x", ScoreContext())
    assert outcome == ScoreOutcome(0.25, {}, 0, 0)


def test_a_plain_score_out_of_range_is_caught_as_a_bug():
    with pytest.raises(ScorerError, match="test_score_only scorer produced 2.0"):
        ScoreOnly().evaluate({}, "", ScoreContext())


def test_an_async_only_scorer_can_score_synchronously_outside_a_loop():
    assert AsyncOnly().score({}, "out", ScoreContext()) == 0.75
    assert AsyncOnly().evaluate({}, "out", ScoreContext()).details == {"seen": "out"}


@pytest.mark.asyncio
async def test_an_async_only_scorer_refuses_sync_scoring_inside_a_loop():
    with pytest.raises(ScorerError, match="use `await scorer.score_async"):
        AsyncOnly(name="mine").score({}, "out", ScoreContext())


@pytest.mark.asyncio
async def test_run_sync_closes_the_coroutine_it_refuses():
    async def never() -> ScoreOutcome:
        raise AssertionError("must not run")

    coro = never()
    with pytest.raises(ScorerError):
        run_sync(coro, "x")
    assert coro.cr_frame is None  # closed, so no "never awaited" warning


def test_a_scorer_that_implements_nothing_says_what_to_override():
    with pytest.raises(NotImplementedError, match="must override evaluate"):
        Nothing().score({}, "x", ScoreContext())


def test_a_named_scorer_labels_its_errors_with_its_name():
    assert AsyncOnly(name="strict").label == "test_async_only scorer 'strict'"
    assert AsyncOnly().label == "test_async_only scorer"


def test_option_fields_describe_each_typed_option_for_a_form():
    from engine.scorers.base import option_fields

    fields = {f["name"]: f for f in option_fields(SCORERS["format"].Options)}
    assert fields["check"]["kind"] == "choice" and fields["check"]["required"]
    assert fields["min_tokens"] == {
        "name": "min_tokens",
        "kind": "int",
        "choices": [],
        "default": None,
        "required": False,
        "optional": True,
        "help": "an integer or null",
    }
    assert fields["schema"]["kind"] == "json" and fields["strip_fence"]["default"] is True
    judge = {f["name"]: f for f in option_fields(SCORERS["llm_judge"].Options)}
    assert judge["temperature"]["kind"] == "float" and judge["samples"]["default"] == 1


def test_the_embedding_scorer_spends_tokens_only_with_an_embedding_model():
    embedding = SCORERS["embedding"]

    class Endpoint:
        embedding_model = "text-embedding-3-small"

    assert not embedding.spends_tokens({}) and embedding.spends_tokens({}, Endpoint())
    assert embedding.spends_tokens({"model": "nomic-embed"})
    assert SCORERS["llm_judge"].spends_tokens({}) and not SCORERS["keyword"].spends_tokens({})
