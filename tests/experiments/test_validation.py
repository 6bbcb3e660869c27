import pytest
from django.core.exceptions import ValidationError

from experiments.models import Experiment

STAGE = {"name": "answer", "system": "Be brief.", "user": "Capital of {{ country }}?"}
KEYWORD = {"type": "keyword", "weight": 1, "config": {"required_present": ["{{ capital }}"]}}


def errors_of(**fields) -> dict[str, list[str]]:
    fields.setdefault("pipeline", [STAGE])
    fields.setdefault("parameter_space", {"temperature": [0.0, 0.7]})
    fields.setdefault("scorers", [KEYWORD])
    with pytest.raises(ValidationError) as info:
        Experiment(name="x", **fields).clean()
    return info.value.message_dict


def test_a_valid_experiment_passes():
    Experiment(
        name="x", pipeline=[STAGE], parameter_space={"temperature": {"min": 0, "max": 1}}, scorers=[KEYWORD]
    ).clean()


def test_pipeline_needs_a_stage():
    assert "at least one stage" in errors_of(pipeline=[])["pipeline"][0]


def test_stage_needs_a_user_template():
    message = errors_of(pipeline=[{"name": "answer", "system": "hi", "user": "  "}])["pipeline"][0]
    assert "Stage 'answer' needs a user template" in message


def test_template_syntax_error_names_stage_field_and_line():
    bad = {"name": "summarise", "user": "line one\nline two {{ unclosed "}
    message = errors_of(pipeline=[STAGE, bad])["pipeline"][0]
    assert "Stage 'summarise' user template" in message
    assert "line 2" in message


def test_system_template_errors_are_caught_too():
    bad = {"name": "answer", "system": "{% if %}", "user": "ok"}
    assert "Stage 'answer' system template" in errors_of(pipeline=[bad])["pipeline"][0]


def test_duplicate_stage_names_are_refused():
    assert "used twice" in errors_of(pipeline=[STAGE, STAGE])["pipeline"][0]


def test_empty_value_list_is_refused():
    message = errors_of(parameter_space={"temperature": []})["parameter_space"][0]
    assert "'temperature' has an empty list" in message


def test_range_needs_min_and_max():
    message = errors_of(parameter_space={"top_p": {"min": 0.5}})["parameter_space"][0]
    assert "'top_p' range needs numeric min and max" in message


def test_range_min_above_max_is_refused():
    assert (
        "min greater than max"
        in errors_of(parameter_space={"top_p": {"min": 1, "max": 0}})["parameter_space"][0]
    )


def test_range_type_must_be_int_or_float():
    message = errors_of(parameter_space={"max_tokens": {"min": 1, "max": 9, "type": "str"}})
    assert "type must be int or float" in message["parameter_space"][0]


def test_scalar_parameter_values_are_refused():
    assert (
        "list of values or a range" in errors_of(parameter_space={"temperature": 0.7})["parameter_space"][0]
    )


def test_stage_parameter_must_name_a_known_stage():
    message = errors_of(parameter_space={"missing.temperature": [0.1]})["parameter_space"][0]
    assert "names stage 'missing'" in message


def test_prompt_variants_must_parse():
    message = errors_of(parameter_space={"answer.user": ["ok {{ country }}", "{{ broken"]})
    assert "'answer.user' variant 2" in message["parameter_space"][0]


def test_unknown_scorer_type_is_refused():
    message = errors_of(scorers=[{"type": "vibes", "weight": 1, "config": {}}])["scorers"][0]
    assert "vibes" in message and "keyword" in message  # names the known types


def test_negative_weight_is_refused():
    bad = dict(KEYWORD, weight=-1)
    assert "weight must be a number >= 0" in errors_of(scorers=[bad])["scorers"][0]


def test_bad_scorer_config_is_refused_up_front():
    bad = {"type": "keyword", "weight": 1, "config": {"required_presnt": ["x"]}}
    assert "required_presnt" in errors_of(scorers=[bad])["scorers"][0]


def test_invalid_json_schema_is_refused():
    bad = {"type": "format", "weight": 1, "config": {"check": "structure", "schema": {"type": "nonsense"}}}
    assert "Scorer 1 (format)" in errors_of(scorers=[bad])["scorers"][0]


def test_every_field_is_reported_at_once():
    errors = errors_of(pipeline=[], parameter_space={"t": []}, scorers=[{"type": "vibes"}])
    assert set(errors) == {"pipeline", "parameter_space", "scorers"}


def test_a_template_over_a_render_limit_is_refused_naming_the_stage_and_the_limit():
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    message = errors_of(pipeline=[{"name": "spin", "user": loops}])["pipeline"][0]
    assert message.startswith("Stage 'spin' user template: The template went over a limit")
    assert "TEMPLATE_MAX_LOOP_ITERATIONS" in message


def test_a_prompt_variant_over_a_render_limit_is_refused():
    space = {"answer.user": ["Capital of {{ country }}?", "{{ 'a' * 10**9 }}"]}
    message = errors_of(parameter_space=space)["parameter_space"][0]
    assert "'answer.user' variant 2" in message and "TEMPLATE_MAX_OUTPUT_CHARS" in message


def test_the_limits_are_settings(settings):
    settings.TEMPLATE_MAX_LOOP_ITERATIONS = 5
    message = errors_of(pipeline=[{"name": "six", "user": "{% for i in range(6) %}{{ i }}{% endfor %}"}])
    assert "more than 5 loop iterations" in message["pipeline"][0]
