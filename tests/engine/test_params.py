"""LLM parameters: OpenAI's with their types and ranges, a server's extras only where listed."""

from __future__ import annotations

from typing import Any

import pytest

from engine.params import (
    EXTRA_PARAMS,
    PARAMS,
    ParamError,
    check_configs,
    check_param,
    check_range,
    extra_name_problem,
)
from engine.types import EndpointConfig, Stage

VALID: list[tuple[str, Any]] = [
    ("temperature", 0),
    ("temperature", 2),
    ("temperature", 0.7),
    ("top_p", 1),
    ("top_p", 0.0),
    ("max_tokens", 1),
    ("max_completion_tokens", 4096),
    ("presence_penalty", -2),
    ("frequency_penalty", 2.0),
    ("seed", -5),
    ("stop", "###"),
    ("stop", ["\n\n", "END", "a", "b"]),
    ("logit_bias", {"50256": -100, "13": 100}),
    ("response_format", {"type": "text"}),
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "r", "schema": {}}}),
    ("reasoning_effort", "minimal"),
    ("reasoning_effort", "high"),
    ("logprobs", True),
    ("top_logprobs", 20),
    ("n", 1),
    ("user", "alice"),
    ("service_tier", "flex"),
    ("parallel_tool_calls", False),
    ("tool_choice", "auto"),
    ("stream", True),
    ("temperature", None),  # None removes the parameter
]

INVALID: list[tuple[str, Any, str]] = [
    ("temperature", 2.01, "from 0 to 2"),
    ("temperature", -0.1, "from 0 to 2"),
    ("temperature", "hot", "from 0 to 2"),
    ("temperature", True, "from 0 to 2"),
    ("top_p", 1.5, "from 0 to 1"),
    ("max_tokens", 0, "above 0"),
    ("max_tokens", 64.5, "whole number"),
    ("max_tokens", 64.0, "whole number"),  # OpenAI refuses a decimal where it wants an integer
    ("max_completion_tokens", -1, "above 0"),
    ("presence_penalty", 2.5, "from -2 to 2"),
    ("frequency_penalty", -3, "from -2 to 2"),
    ("seed", "42", "whole number"),
    ("stop", ["a", "b", "c", "d", "e"], "at most 4"),
    ("stop", 7, "text or a list"),
    ("stop", ["a", 1], "text or a list"),
    ("logit_bias", {"the": 5}, "not a token id"),
    ("logit_bias", {"13": 101}, "-100 to 100"),
    ("logit_bias", [1, 2], "object"),
    ("response_format", {"type": "xml"}, "text, json_object, json_schema"),
    ("response_format", "json", "text, json_object, json_schema"),
    ("response_format", {"type": "json_schema"}, 'needs a "json_schema" object'),
    ("reasoning_effort", "extreme", "one of"),
    ("logprobs", "yes", "true or false"),
    ("top_logprobs", 21, "from 0 to 20"),
    ("n", 2, "samples are the sweep's `repeats`"),
    ("user", 5, "text"),
    ("service_tier", "gold", "one of"),
    ("tool_choice", "sometimes", "none, auto, required"),
]


@pytest.mark.parametrize("name,value", VALID, ids=[f"{n}={v!r}" for n, v in VALID])
def test_a_valid_value_passes(name: str, value: Any) -> None:
    check_param(name, value)


@pytest.mark.parametrize("name,value,reason", INVALID, ids=[f"{n}={v!r}" for n, v, _ in INVALID])
def test_an_invalid_value_is_refused_naming_the_parameter_and_the_reason(
    name: str, value: Any, reason: str
) -> None:
    with pytest.raises(ParamError) as info:
        check_param(name, value)
    assert str(info.value).startswith(f"'{name}' ") and reason in str(info.value)


@pytest.mark.parametrize(
    "typo,meant",
    [
        ("temprature", "temperature"),
        ("max_token", "max_tokens"),
        ("top-p", "top_p"),
        ("frequency", "frequency_penalty"),
    ],
)
def test_an_unknown_name_says_the_closest_known_one(typo: str, meant: str) -> None:
    with pytest.raises(ParamError, match=f"unknown parameter '{typo}' — did you mean {meant}\\?"):
        check_param(typo, 1)


def test_a_name_like_nothing_known_has_no_guess_but_says_where_extras_go() -> None:
    with pytest.raises(ParamError) as info:
        check_param("zzz", 1)
    assert "did you mean" not in str(info.value)
    assert "extra parameters" in str(info.value)


def test_what_the_runner_sets_is_not_a_parameter() -> None:
    with pytest.raises(ParamError, match="stage's model"):
        check_param("model", "gpt-4o")
    with pytest.raises(ParamError, match="system and user templates"):
        check_param("messages", [])


def test_a_server_parameter_counts_only_where_the_endpoint_lists_it() -> None:
    with pytest.raises(ParamError, match="list it among the endpoint's extra parameters"):
        check_param("top_k", 40)
    check_param("top_k", 40, extras=["top_k"])
    check_param("num_gpu_layers", {"any": "value"}, extras=["num_gpu_layers"])  # no rule of ours


@pytest.mark.parametrize(
    "name,value",
    [("top_k", -2), ("min_p", 1.5), ("mirostat", 3), ("repetition_penalty", 0), ("typical_p", "x")],
)
def test_a_known_extra_keeps_its_range(name: str, value: Any) -> None:
    with pytest.raises(ParamError, match=f"^'{name}' "):
        check_param(name, value, extras=[name])


def test_every_known_extra_is_not_an_openai_parameter() -> None:
    assert not set(EXTRA_PARAMS) & set(PARAMS)


def test_a_range_must_lie_inside_the_parameter_and_be_whole_where_it_must() -> None:
    check_range("temperature", {"min": 0, "max": 2})
    check_range("max_tokens", {"min": 16, "max": 512, "type": "int"})
    with pytest.raises(ParamError, match="range max 3"):
        check_range("temperature", {"min": 0, "max": 3})
    with pytest.raises(ParamError, match='give the range "type": "int"'):
        check_range("max_tokens", {"min": 16, "max": 512})
    with pytest.raises(ParamError, match="not a range; list the values"):
        check_range("stop", {"min": 0, "max": 1})
    with pytest.raises(ParamError, match="did you mean top_p"):
        check_range("top_q", {"min": 0, "max": 1})


@pytest.mark.parametrize(
    "names,reason",
    [
        ("top_k", "list of parameter names"),
        (["top k"], "not a parameter name"),
        (["temperature"], "OpenAI parameter"),
        (["model"], "not an LLM parameter"),
    ],
)
def test_an_endpoints_extra_names_are_checked(names: Any, reason: str) -> None:
    assert reason in (extra_name_problem(names) or "")


def test_a_plain_list_of_names_is_fine() -> None:
    assert extra_name_problem(["top_k", "min_p", "my_server_knob"]) is None


PLAIN = EndpointConfig(name="openai", base_url="http://x/v1")
VLLM = EndpointConfig(name="vllm", base_url="http://y/v1", extra_params=("top_k",))
ENDPOINTS = {"openai": PLAIN, "vllm": VLLM}
STAGES = [Stage(name="draft", user="hi"), Stage(name="polish", user="{{ previous }}")]


def test_a_launch_checks_each_stage_against_the_endpoint_it_calls() -> None:
    check_configs([{"endpoint": "vllm", "top_k": 40}], STAGES, PLAIN, ENDPOINTS)
    check_configs([{"draft.endpoint": "vllm", "draft.top_k": 40}], STAGES, PLAIN, ENDPOINTS)
    with pytest.raises(ParamError) as info:
        check_configs([{"draft.endpoint": "vllm", "top_k": 40}], STAGES, PLAIN, ENDPOINTS)
    assert info.value.field == "parameter_space"
    assert "'top_k'" in str(info.value) and "stage 'polish' calls endpoint 'openai'" in str(info.value)


def test_a_stage_param_the_endpoint_no_longer_lists_is_a_pipeline_error() -> None:
    stages = [Stage(name="draft", user="hi", params={"min_p": 0.1})]
    check_configs([{}], stages, EndpointConfig("x", "", extra_params=("min_p",)), {})
    with pytest.raises(ParamError) as info:
        check_configs([{}], stages, PLAIN, ENDPOINTS)
    assert info.value.field == "pipeline" and str(info.value).startswith("Stage 'draft' params:")


def test_the_runners_own_keys_are_not_checked_at_launch() -> None:
    config = {"model": "m", "endpoint": "openai", "draft.user": "x", "system": "s", "temperature": None}
    check_configs([config], STAGES, PLAIN, ENDPOINTS)


@pytest.mark.parametrize("name", ["temperature", "seed", "max_tokens"])
def test_a_number_too_large_for_a_float_is_refused_not_a_crash(name):
    with pytest.raises(ParamError, match=name):
        check_param(name, 10**400)
