"""Every render is bounded: loop iterations, characters built, wall time.
Going over is a template error that names the limit (and, in a run, the stage)."""

import time

import pytest

from engine.runner import RunSpec, run_single
from engine.templates import RenderLimits, TemplateLimitError, check_limits, render
from engine.types import EndpointConfig, Item, Stage

NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
SMALL = RenderLimits(loop_iterations=1_000, output_chars=10_000, seconds=0.3)


def rendering_fails_fast(source: str, match: str, limits: RenderLimits = SMALL) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateLimitError, match=match):
        render(source, {"n": 10**8}, limits)
    assert time.monotonic() - started < limits.seconds + 0.5


def test_nested_loops_stop_at_the_iteration_limit():
    rendering_fails_fast(NESTED_LOOPS, r"more than 1,000 loop iterations \(TEMPLATE_MAX_LOOP_ITERATIONS\)")


def test_the_issue_s_loops_stop_at_the_default_limits_within_a_second():
    source = "{% for i in range(100000) %}{% for j in range(300) %}{% endfor %}{% endfor %}"
    rendering_fails_fast(source, "loop iterations", RenderLimits())


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10**8 }}",
        "{{ 'a' * n }}",
        "{{ 'x' | center(10**8) }}",
        "{{ '%0100000000d' % 1 }}",
        "{{ '%0100000000d' | format(1) }}",
        "{{ '{:>100000000}'.format(1) }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set x %}{% for i in range(900) %}" + "y" * 1000 + "{% endfor %}{% endset %}",
        "{{ ([''] * 4000) | join('a' * 4000) }}",
        "{{ ('a' * 5000).join([''] * 5000) }}",
        "{{ ('a' * 9000).replace('a', 'b' * 9000) }}",
        "{{ ('a' * 9000) | replace('', 'b' * 9000) }}",
    ],
)
def test_huge_strings_are_refused_before_they_are_built(source):
    rendering_fails_fast(source, r"characters \(TEMPLATE_MAX_OUTPUT_CHARS is 10,000\)")


def test_the_output_is_bounded():
    rendering_fails_fast(
        "{% for i in range(500) %}{{ 'abcdefghij' * 5 }}{% endfor %}", "output of more than 10,000"
    )


def test_a_slow_render_stops_at_the_time_limit():
    rendering_fails_fast(
        "{% for i in range(900) %}{{ range(99999) | sum }}{% endfor %}",
        r"took over 0.3 s \(TEMPLATE_MAX_RENDER_S\)",
        RenderLimits(loop_iterations=1_000, output_chars=10_000, seconds=0.3),
    )


def test_ordinary_templates_render_as_before():
    source = (
        "{% for c in countries %}{{ loop.index }}. {{ c | upper }}{{ ', ' if not loop.last }}{% endfor %}"
    )
    assert render(source, {"countries": ["peru", "chile"]}, SMALL) == "1. PERU, 2. CHILE"
    assert (
        render("{{ '%5d' % 3 }}|{{ 'ab' | center(6) }}|{{ 12345678901 }}", {}, SMALL)
        == "    3|  ab  |12345678901"
    )


def test_limits_are_checked_without_the_variables_at_validation_time():
    with pytest.raises(TemplateLimitError, match="loop iterations"):
        check_limits(NESTED_LOOPS)
    check_limits(
        "{% for x in rows %}{{ x * 3 }}{% endfor %}{{ missing.deep.name }}"
    )  # unknown until run time


async def test_a_run_over_a_limit_fails_naming_the_stage_and_the_limit():
    from engine.runner import InMemoryResultSink

    spec = RunSpec(
        run_id=1,
        experiment_id=1,
        sweep_id=None,
        config={},
        stages=[Stage(name="expand", user="{{ 'a' * 10**9 }}")],
        items=[Item(id=1, input={}, reference="")],
        scorers=[],
        endpoint=EndpointConfig(name="e", base_url="http://127.0.0.1:9/v1", default_model="m"),
    )
    outcome = await run_single(spec, llm=None, sink=InMemoryResultSink())
    assert outcome.status == "failed"
    assert outcome.error.startswith("Stage 'expand' (#1) on item 1 (row 0): The template went over a limit")
    assert "TEMPLATE_MAX_OUTPUT_CHARS" in outcome.error


def test_a_judge_prompt_is_bounded_too():
    from engine.scorers import build_scorer
    from engine.types import ScoreContext, ScorerSpec

    judge = build_scorer(
        ScorerSpec(type="llm_judge", config={"prompt": "{{ output }}" + NESTED_LOOPS}, name="judge")
    )
    with pytest.raises(Exception, match="went over a limit"):
        judge.render({}, "an answer", ScoreContext(reference=""))
