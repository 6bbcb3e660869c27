"""Stage prompts are sandboxed Jinja; dataset values are data, never templates."""

from __future__ import annotations

import pytest

from engine.templates import _compile, parse_template, render, template_variables
from engine.types import TemplateError


def test_a_template_fills_in_the_items_fields() -> None:
    assert render("Capital of {{ country }}?", {"country": "France"}) == "Capital of France?"


def test_plain_text_comes_back_as_it_is() -> None:
    assert render("No variables here.", {}) == "No variables here."


def test_earlier_stage_outputs_are_reachable_by_name() -> None:
    text = render("{{ previous }} / {{ stages.draft }}", {"previous": "b", "stages": {"draft": "a"}})
    assert text == "b / a"


def test_a_missing_variable_names_itself() -> None:
    with pytest.raises(TemplateError, match="'country' is undefined") as info:
        render("Capital of {{ country }}?", {"city": "Paris"})
    assert "Available variables: city" in str(info.value)


def test_a_syntax_error_gives_the_line_number() -> None:
    with pytest.raises(TemplateError, match="line 3"):
        parse_template("one\ntwo\n{% if %}")


def test_a_valid_template_parses() -> None:
    parse_template("{% for x in items %}{{ x }}{% endfor %}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ joiner.__init__.__globals__.os }}",
    ],
)
def test_the_sandbox_keeps_templates_away_from_python_internals(source: str) -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        render(source, {})


def test_a_template_value_inside_a_dataset_field_reaches_the_prompt_verbatim() -> None:
    value = "{{ secret }} and {% for x in y %}loop{% endfor %}"
    assert render("Q: {{ question }}", {"question": value, "secret": "leaked"}) == f"Q: {value}"


def test_a_failure_inside_the_template_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render("{{ 1 / n }}", {"n": 0})


def test_a_huge_range_is_stopped_by_the_sandbox() -> None:
    with pytest.raises(TemplateError, match="Range too big"):
        render("{{ range(10**9) | list }}", {})


def test_compiled_templates_are_reused() -> None:
    source = "Hello {{ name }}, reuse me"
    render(source, {"name": "alice"})
    hits = _compile.cache_info().hits
    render(source, {"name": "bob"})
    assert _compile.cache_info().hits == hits + 1


def test_template_variables_lists_what_the_template_reads() -> None:
    source = "{% set tone = 'dry' %}{{ question }} {{ tone }} {{ stages.draft }} {{ previous }}"
    assert template_variables(source) == {"question", "stages", "previous"}


def test_template_variables_reports_a_syntax_error() -> None:
    with pytest.raises(TemplateError, match="line 1"):
        template_variables("{{ x ")
