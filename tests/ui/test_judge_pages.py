"""The pages say who judges, warn when a model judges itself, and show how far the
judge can be trusted: outputs it could not rate, its spread, its agreement with people."""

import pytest
from django.urls import reverse

from engine.sweep import config_key
from runs.aggregates import summarize
from runs.models import Run, RunStatus, Score, StageResult
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db

STATS = {"judge": {"scored": 2, "errors": 1, "mean_spread": 0.82, "spread_outputs": 2}}


def judged_experiment(config: dict):
    make_endpoint("judge-box", default_model="qwen-judge")
    judge = {"type": "llm_judge", "name": "judge", "weight": 1.0, "config": config}
    return make_experiment(make_endpoint("ollama-bob", default_model="llama3.2"), scorers=[judge])


def judged_run(experiment) -> Run:
    config = {"temperature": 0.7}
    run = Run.objects.create(
        experiment=experiment,
        config=config,
        config_hash=config_key(config),
        status=RunStatus.COMPLETED,
        weighted_score=0.5,
        scorer_stats=STATS,
    )
    item = experiment.items.order_by("position").first()
    StageResult.objects.create(
        run=run, item=item, stage_index=0, stage_name="answer", user_prompt="?", output="Paris"
    )
    details = {"raw": ['{"rating": 4}', '{"rating": 6}'], "ratings": [4.0, 6.0], "rating": 5.0, "spread": 1.0}
    Score.objects.create(run=run, item=item, scorer="judge", value=4 / 9, details=details)
    summarize(run.pk)  # as the runner does when a run completes
    return run


def test_the_experiment_page_names_the_judge_and_its_figures(client):
    experiment = judged_experiment({"endpoint": "judge-box", "samples": 2})
    judged_run(experiment)
    html = client.get(reverse("ui:experiment_detail", args=[experiment.pk])).content.decode()
    assert "Judged by <strong>qwen-judge</strong> on endpoint <strong>judge-box</strong>" in html
    assert "asked 2 times per output" in html
    assert "<dt>Could not rate</dt><dd>1</dd>" in html
    assert "0.82 points" in html
    assert "too few ratings: 0 &lt; 20" in html
    assert "judges outputs it wrote itself" not in html


def test_the_experiment_page_warns_when_a_model_judges_itself(client):
    experiment = judged_experiment({})
    html = client.get(reverse("ui:experiment_detail", args=[experiment.pk])).content.decode()
    assert "Judged by <strong>llama3.2</strong> on endpoint <strong>ollama-bob</strong>" in html
    assert 'class="message warning" role="alert">llama3.2 judges outputs it wrote itself' in html


def test_an_experiment_without_a_judge_shows_no_judge_section(client):
    experiment = make_experiment(make_endpoint())
    assert (
        'id="judges"'
        not in client.get(reverse("ui:experiment_detail", args=[experiment.pk])).content.decode()
    )


def test_the_leaderboard_has_a_could_not_rate_and_a_spread_column_per_judge(client):
    experiment = judged_experiment({"samples": 2})
    judged_run(experiment)
    response = client.get(reverse("ui:leaderboard", args=[experiment.pk]))
    html = response.content.decode()
    assert "judge could not rate</button>" in html and "judge spread</button>" in html
    assert response.context["rows"][0]["judge_cells"] == [{"could_not_rate": 1, "mean_spread": 0.82}]


def test_the_run_page_shows_the_judges_unrated_outputs_and_each_samples_rating(client):
    run = judged_run(judged_experiment({"samples": 2}))
    html = client.get(reverse("ui:run", args=[run.pk])).content.decode()
    assert "<dt>judge: could not rate</dt><dd>1" in html and "spread 0.82 points" in html
    assert "ratings 4.0, 6.0" in html
