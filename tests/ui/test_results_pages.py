"""Leaderboard, charts, run detail with human review, exports and the report."""

import json

import pytest
import yaml
from django.urls import reverse

from runs.aggregates import summarize
from runs.models import Run, RunStatus, Score, ScoreSource, StageResult, Sweep, SweepStatus
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db

SCORERS = [
    {"type": "keyword", "weight": 1.0, "config": {"required_present": ["{{ capital }}"]}},
    {"type": "human", "weight": 1.0, "config": {}},
]
# temperature -> (score per item, tokens): 0.0 is best, 0.2 nearly as good and cheaper
CONFIGS = {0.0: ([1.0, 1.0, 1.0], 90), 0.2: ([1.0, 1.0, 0.9], 30), 1.0: ([0.0, 0.5, 0.0], 60)}


@pytest.fixture
def sweep() -> Sweep:
    experiment = make_experiment(
        make_endpoint(), scorers=SCORERS, parameter_space={"temperature": list(CONFIGS)}
    )
    sweep = Sweep.objects.create(
        experiment=experiment, status=SweepStatus.COMPLETED, total_runs=3, completed_runs=3
    )
    items = list(experiment.items.all())
    for n, (temperature, (scores, tokens)) in enumerate(CONFIGS.items()):
        run = Run.objects.create(
            experiment=experiment,
            sweep=sweep,
            config={"temperature": temperature, "model": "stub-small"},
            config_hash=f"{n:064d}",
            status=RunStatus.COMPLETED,
            weighted_score=sum(scores) / len(scores),
            tokens_in=tokens - 10,
            tokens_out=10,
            latency_ms=100.0 + n,
        )
        for item, value in zip(items, scores, strict=True):
            answer = item.input["capital"] if value else "<b>Nowhere</b>"
            StageResult.objects.create(
                run=run,
                item=item,
                stage_index=0,
                stage_name="answer",
                model="stub-small",
                system_prompt="Be brief.",
                user_prompt=f"What is the capital of {item.input['country']}?",
                output=answer,
            )
            Score.objects.create(run=run, item=item, scorer="keyword", value=value, details={"missing": []})
            Score.objects.create(
                run=run, item=item, scorer="human", value=None, details={"error": "no ratings yet"}
            )
        summarize(run.pk)  # as the runner does when a run completes
    return sweep


def best_run(sweep: Sweep) -> Run:
    return sweep.runs.get(config__temperature=0.0)


def test_the_leaderboard_ranks_configurations_with_their_interval(client, sweep):
    response = client.get(reverse("ui:leaderboard", args=[sweep.experiment_id]), {"sweep": sweep.pk})
    rows = response.context["rows"]
    assert [r["config"]["temperature"] for r in rows] == [0.0, 0.2, 1.0]
    assert rows[0]["ci_low"] == rows[0]["ci_high"] == 1.0 and rows[2]["ci_low"] < rows[2]["ci_high"]
    content = response.content.decode()
    assert '<span class="varies">temperature</span>' in content  # it differs: highlighted
    assert "<code>model=stub-small</code>" in content  # the same everywhere: said once
    assert "[0.000–0.500]" in content or "[0.000–0.333]" in content
    assert "data-sortable" in content and '<button type="button" class="sort">Score</button>' in content


def test_a_race_lists_its_survivors_first_and_marks_the_dropped(client, sweep):
    # 0.2 nearly as good but dropped after 2 rows: it ranks below the survivor 1.0.
    sweep.runs.filter(config__temperature=0.2).update(eliminated_after=2)
    response = client.get(reverse("ui:leaderboard", args=[sweep.experiment_id]), {"sweep": sweep.pk})
    assert [r["config"]["temperature"] for r in response.context["rows"]] == [0.0, 1.0, 0.2]
    assert response.content.decode().count("dropped at 2 rows") == 1


def test_charts_draw_the_histogram_and_mark_the_cheapest_nearly_best(client, sweep):
    response = client.get(reverse("ui:charts", args=[sweep.experiment_id]))
    pick = response.context["pick"]
    assert pick["config"]["temperature"] == 0.2  # tied with the leader, a third of its tokens
    content = response.content.decode()
    assert content.count('<rect class="bar"') == 10
    assert content.count('class="dot') == 3 * 3 and "dot front pick" in content  # tokens, latency, cost
    assert 'class="front-line"' in content


def test_the_run_detail_shows_prompts_outputs_references_and_score_errors(client, sweep):
    run = sweep.runs.get(config__temperature=1.0)
    content = client.get(reverse("ui:run", args=[run.pk])).content.decode()
    assert "What is the capital of France?" in content and "Be brief." in content
    assert "&lt;b&gt;Nowhere&lt;/b&gt;" in content  # outputs are escaped
    assert "Paris is the capital of France." in content
    assert "keyword: 0.000" in content and "human: error" in content and "no ratings yet" in content
    assert content.count('class="rating-form"') == 3


def test_a_rating_is_stored_as_a_human_score_and_updated_not_duplicated(client, sweep, alice):
    run, item = best_run(sweep), sweep.experiment.items.get(position=1)
    url = reverse("ui:rate", args=[run.pk, item.pk])
    response = client.post(
        url, {f"item{item.pk}-rating": "7", f"item{item.pk}-comment": "Fine."}, follow=True
    )
    assert b"Saved your rating of 7/10 for row #2." in response.content  # position 1: the second row
    client.post(url, {f"item{item.pk}-rating": "10", f"item{item.pk}-comment": "Perfect."})
    rating = Score.objects.get(run=run, source=ScoreSource.HUMAN)
    assert (rating.value, rating.author, rating.comment, rating.item) == (1.0, alice, "Perfect.", item)
    page = client.get(reverse("ui:run", args=[run.pk])).content.decode()
    assert "(saved: 10/10)" in page and "Perfect." in page


def test_a_rating_updates_the_human_scorer_and_the_weighted_score(client, sweep):
    run, item = sweep.runs.get(config__temperature=1.0), sweep.experiment.items.get(position=0)
    client.post(reverse("ui:rate", args=[run.pk, item.pk]), {f"item{item.pk}-rating": "1"})
    run.refresh_from_db()
    # row 0: keyword 0.0 and human 0.0; rows 1 and 2 are not rated: keyword alone (0.5, 0.0)
    assert run.weighted_score == pytest.approx((0.0 + 0.5 + 0.0) / 3)
    assert Score.objects.get(run=run, item=item, scorer="human", source=ScoreSource.AUTO).value == 0.0


def test_a_rating_outside_1_to_10_is_refused(client, sweep):
    run, item = best_run(sweep), sweep.experiment.items.first()
    response = client.post(
        reverse("ui:rate", args=[run.pk, item.pk]), {f"item{item.pk}-rating": "11"}, follow=True
    )
    assert b"choose a rating from 1 to 10" in response.content
    assert not Score.objects.filter(source=ScoreSource.HUMAN).exists()


def test_bob_rates_separately_from_alice(client, sweep, alice, bob):
    run, item = best_run(sweep), sweep.experiment.items.first()
    url = reverse("ui:rate", args=[run.pk, item.pk])
    client.post(url, {f"item{item.pk}-rating": "10"})
    client.force_login(bob)
    client.post(url, {f"item{item.pk}-rating": "1", f"item{item.pk}-comment": "Too short."})
    assert Score.objects.filter(run=run, source=ScoreSource.HUMAN).count() == 2
    page = client.get(reverse("ui:run", args=[run.pk])).content.decode()
    assert "alice rated 10/10" in page and "(saved: 1/10)" in page


def test_the_best_configuration_downloads_as_json_env_and_yaml(client, sweep):
    run = best_run(sweep)
    x = sweep.experiment_id
    as_json = client.get(reverse("ui:export", args=[x, "json"]))
    assert as_json["Content-Disposition"] == f'attachment; filename="promptlooper-{x}-run-{run.pk}.json"'
    exported = json.loads(as_json.content)
    assert exported["metadata"]["run_id"] == run.pk and exported["config"]["temperature"] == 0.0
    assert (
        yaml.safe_load(client.get(reverse("ui:export", args=[x, "yaml"])).content)["metadata"]["run_id"]
        == run.pk
    )
    env = client.get(reverse("ui:export", args=[x, "env"])).content.decode()
    assert f"PROMPTLOOPER_RUN_ID='{run.pk}'" in env


def test_any_run_can_be_exported(client, sweep):
    other = sweep.runs.get(config__temperature=1.0)
    response = client.get(reverse("ui:export", args=[sweep.experiment_id, "json"]), {"run": other.pk})
    assert json.loads(response.content)["metadata"]["run_id"] == other.pk


def test_the_report_is_rendered_as_html(client, sweep):
    sweep.experiment.name = "Capitals <script>alert(1)</script>"
    sweep.experiment.save()
    content = client.get(reverse("ui:report", args=[sweep.experiment_id])).content.decode()
    assert "<h1>Report: Capitals &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in content
    assert "<script>alert" not in content
    assert '<th scope="col">rank</th>' in content and "<td>1.000</td>" in content
    assert "<li>Tokens in:" in content and "<li>Cost: 0.0000 USD</li>" in content
    # The score distributions are SVG bar charts, not text bars.
    assert content.count('<svg class="chart histogram"') == 2 and "█" not in content  # keyword, weighted
    assert '<rect class="bar"' in content and "<title>1.0–1.1: " not in content
    assert 'href="/experiments/' in content and "export.json" in content


def test_beyond_the_limit_runs_off_the_front_are_binned_and_the_front_stays_exact(client, sweep, monkeypatch):
    monkeypatch.setattr("runs.charts.CHART_POINTS", 1)
    content = client.get(reverse("ui:charts", args=[sweep.experiment_id])).content.decode()
    # Tokens: 0.0 and 0.2 are the front (0.2 is also the pick); by latency and by
    # cost (unpriced: all 0) 0.0 is the front and 0.2 the pick. Run 1.0, on no
    # front, is one cell in each of the three charts.
    assert content.count('class="dot') == 6 and content.count('class="dot front') == 4
    assert content.count('<rect class="cell"') == 3 and content.count("<title>1 run</title>") == 3
    assert content.count('<rect class="bar"') == 10  # the histogram still counts every run
