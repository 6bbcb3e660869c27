"""A two-stage pipeline evaluated end to end through the ORM, on the configured database."""

import pytest

from runs.bridge import cache_table_stats
from runs.models import ResponseCache, Run, RunStatus, Score, StageResult
from runs.tasks import execute_run
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db(transaction=True)

PIPELINE = [
    {"name": "draft", "system": "You write drafts.", "user": "Name the capital of {{ country }}."},
    {
        "name": "polish",
        "system": "You polish text.",
        "user": "Polish: {{ previous }} (first draft: {{ stages.draft }})",
    },
]


def capital_responder(body):
    user = body["messages"][-1]["content"]
    if user.startswith("Polish:"):
        return "Final answer. " + user
    for country, capital in (("France", "Paris"), ("Japan", "Tokyo"), ("Peru", "Lima")):
        if country in user:
            return f"The capital is {capital}."
    return "I do not know."


@pytest.fixture
def experiment(llm_stub):
    llm_stub.responder = capital_responder
    endpoint = make_endpoint(base_url=llm_stub.base_url)
    scorers = [
        {"type": "keyword", "weight": 2, "config": {"required_present": ["{{ capital }}"]}},
        {
            "type": "format",
            "weight": 1,
            "name": "length",
            "config": {"check": "length", "min_tokens": 1, "max_tokens": 8},
        },
    ]
    return make_experiment(endpoint, pipeline=PIPELINE, scorers=scorers)


def start_run(experiment, config=None) -> Run:
    run = Run.objects.create(experiment=experiment, config=config or {"temperature": 0.2}, config_hash="x")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_stage_two_sees_stage_one_output(experiment, llm_stub):
    run = start_run(experiment)
    assert run.status == RunStatus.COMPLETED, run.error
    polish = StageResult.objects.get(run=run, stage_name="polish", item__position=0)
    assert "Polish: The capital is Paris." in polish.user_prompt
    assert "(first draft: The capital is Paris.)" in polish.user_prompt
    assert StageResult.objects.filter(run=run).count() == 6  # 3 items x 2 stages
    assert llm_stub.calls == 6


def test_scores_are_weighted_and_stored(experiment):
    run = start_run(experiment)
    assert Score.objects.filter(run=run, scorer="keyword", value=1.0).count() == 3
    lengths = Score.objects.filter(run=run, scorer="length").values_list("value", flat=True)
    assert all(0 < v < 1 for v in lengths)  # the polished answers are longer than 8 words
    expected = (2 * 1.0 + 1 * sum(lengths) / 3) / 3
    assert run.weighted_score == pytest.approx(expected)
    assert run.tokens_in > 0 and run.tokens_out > 0


def test_running_again_makes_no_calls_and_gives_the_same_scores(experiment, llm_stub):
    first = start_run(experiment)
    calls_after_first = llm_stub.calls
    second = start_run(experiment)
    assert llm_stub.calls == calls_after_first
    assert second.weighted_score == first.weighted_score
    assert second.cached_calls == second.calls == 6
    assert StageResult.objects.filter(run=second, cached=True).count() == 6
    assert ResponseCache.objects.filter(hit_count__gt=0).count() == 6
    stats = cache_table_stats([experiment.project_id])
    assert stats["entries"] == 6 and stats["storage_bytes"] > 0
    assert stats["hits"] == 6 and stats["misses"] == 6 and stats["hit_rate"] == 0.5


def test_a_new_temperature_is_a_new_call(experiment, llm_stub):
    start_run(experiment, {"temperature": 0.2})
    start_run(experiment, {"temperature": 0.9})
    assert llm_stub.calls == 12


def test_a_failed_call_fails_the_run_readably_and_keeps_results(experiment, llm_stub):
    llm_stub.fail_next("status", status=400, body='{"error": "context length exceeded"}')
    run = start_run(experiment)
    assert run.status == RunStatus.FAILED
    assert "400" in run.error and "context length exceeded" in run.error


def test_a_run_is_claimed_once(experiment, llm_stub):
    run = start_run(experiment)
    assert execute_run(run.pk) == "skipped: not pending"
    assert llm_stub.calls == 6


def test_a_judge_that_chatters_is_counted_as_unrated_not_as_a_low_score(experiment, llm_stub):
    # The case: "The answer to the task is 1." was once read as a rating of 1.
    def responder(body):
        user = body["messages"][-1]["content"]
        if "grading" not in user:
            return capital_responder(body)
        return '{"rating": 9}' if "Paris" in user else "The answer to the task is 1."

    llm_stub.responder = responder
    experiment.scorers = [{"type": "llm_judge", "name": "judge", "weight": 1, "config": {"samples": 2}}]
    experiment.save()
    run = start_run(experiment)
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.scorer_stats["judge"] == {"scored": 1, "errors": 2, "mean_spread": 0.0, "spread_outputs": 1}
    assert run.weighted_score == pytest.approx(8 / 9)  # only France was rated: 9 twice, not a 1 among them
    unrated = Score.objects.filter(run=run, scorer="judge", value=None)
    assert unrated.count() == 2
    assert all(s.details["raw"] == ["The answer to the task is 1."] * 2 for s in unrated)
    # Each of the two samples is its own request, also for the same output.
    assert llm_stub.calls == 6 + 3 * 2
