"""GET /api/experiments/{id}/report/: a markdown summary of everything tried."""

import pytest
from django.utils import timezone

from experiments.models import Report
from runs.aggregates import summarize
from runs.models import Run, Score, Sweep
from tests.api.helpers import scored_run, stage_result
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(db):
    experiment = make_experiment(make_endpoint())
    started = timezone.now() - timezone.timedelta(seconds=42)
    sweep = Sweep.objects.create(
        experiment=experiment, status="completed", started_at=started, finished_at=timezone.now()
    )
    item = experiment.items.first()
    for n, (temperature, values) in enumerate([(0.0, [1, 1, 1]), (0.7, [1, 0, 0]), (1.0, [0, 0, 0])]):
        run = scored_run(
            experiment, {"temperature": temperature, "top_p": 0.9}, {"keyword": values}, sweep=sweep
        )
        stage_result(run, item=item, latency_ms=100 * (n + 1), tokens_in=30, tokens_out=10)
        stage_result(run, item=item, cached=True, latency_ms=999, tokens_in=7, tokens_out=3)
        summarize(run.pk)  # the stage results came after the helper's summary
    return experiment


def test_the_report_is_markdown_with_every_section(api, experiment):
    response = api.get(f"/api/experiments/{experiment.pk}/report/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    text = response.content.decode()
    assert text.startswith("# Report: Capitals")
    for heading in (
        "## Configuration space explored",
        "## Top 5 configurations",
        "## Score distributions",
        "### keyword",
        "### weighted score",
        "## Token usage",
        "## Timing",
    ):
        assert heading in text


def test_the_report_lists_values_tried_the_top_configurations_and_the_numbers(api, experiment):
    text = api.get(f"/api/experiments/{experiment.pk}/report/").content.decode()
    assert "| `temperature` | `0.0` (1), `0.7` (1), `1.0` (1) |" in text
    assert "| `top_p` | `0.9` (3) |" in text
    top = text.split("## Top 5 configurations")[1].split("##")[0]
    assert top.index('"temperature": 0.0') < top.index('"temperature": 0.7') < top.index('"temperature": 1.0')
    assert "q1 " in text and "median 0.333" in text and "█" in text
    assert "Tokens in: 300" in text  # 3 runs x 100 (helper default)
    assert "Saved by the cache: 30 tokens" in text  # 3 cached stage results x (7 + 3)
    assert "p50 200 ms, p95 300 ms" in text  # uncached calls only
    assert "wall time 42.0 s" in text


def test_the_report_as_json_when_asked(api, experiment):
    response = api.get(f"/api/experiments/{experiment.pk}/report/", HTTP_ACCEPT="application/json")
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["markdown"].startswith("# Report: Capitals")


def test_a_fresh_experiment_has_a_report_too(api):
    text = api.get(f"/api/experiments/{make_experiment(name='New').pk}/report/").content.decode()
    assert "No configuration has been run yet." in text and "No completed run has a score yet." in text


def test_a_report_without_a_judge_has_no_judge_section(api, experiment):
    assert "## Judges" not in api.get(f"/api/experiments/{experiment.pk}/report/").content.decode()


def test_the_report_shows_each_judge_its_unrated_outputs_spread_and_agreement(api, alice):
    judge = {"type": "llm_judge", "name": "strict", "weight": 1, "config": {"samples": 3}}
    experiment = make_experiment(make_endpoint(default_model="llama3.2"), scorers=[judge])
    run = scored_run(experiment, {"temperature": 0.2}, {"strict": [1.0, None, 0.0]})
    stats = {"scored": 2, "errors": 1, "mean_spread": 0.47, "spread_outputs": 2}
    Run.objects.filter(pk=run.pk).update(scorer_stats={"strict": stats})
    item = experiment.items.order_by("position").first()
    Score.objects.create(run=run, item=item, scorer="human", source="human", value=1.0, author=alice)
    text = api.get(f"/api/experiments/{experiment.pk}/report/").content.decode()
    section = text.split("## Judges")[1].split("\n## ")[0]
    assert (
        "| strict | local · llama3.2 | 3 | 2 | 1 | 0.47 | 1 | – | 0.00 | too few ratings: 1 < 20 |" in section
    )
    # The endpoint's default model answers the stage and judges it too.
    assert "- Warning: llama3.2 judges outputs it wrote itself (stage 'answer')" in section


def test_a_report_built_again_replaces_the_kept_one(api, experiment):
    first = api.get(f"/api/experiments/{experiment.pk}/report/", HTTP_ACCEPT="text/markdown")
    Report.keep(experiment.pk, "# An older build")  # e.g. a sweep's last worker finishing meanwhile
    assert Report.objects.filter(experiment=experiment).count() == 1
    kept = api.get(f"/api/experiments/{experiment.pk}/report/", HTTP_ACCEPT="text/markdown")
    assert kept.content.decode() == "# An older build" != first.content.decode()
