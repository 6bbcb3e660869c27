"""/runs/compare/: two runs row by row, from the leaderboard's ticks or a sweep page."""

import pytest
from django.urls import reverse

from runs.models import Sweep, SweepStatus
from tests.api.helpers import scored_run, stage_result
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(db):
    return make_experiment(make_endpoint())


def sweep_with_run(experiment, temperature, scores, outputs):
    sweep = Sweep.objects.create(experiment=experiment, status=SweepStatus.COMPLETED, total_runs=1)
    run = scored_run(experiment, {"temperature": temperature}, {"keyword": scores}, sweep=sweep)
    for item, output in zip(experiment.items.order_by("position"), outputs, strict=True):
        stage_result(run, item, output=output)
    return sweep, run


@pytest.fixture
def two_sweeps(experiment):
    first = sweep_with_run(experiment, 0.0, [1.0, 1.0, 1.0], ["Paris", "Tokyo", "Lima"])
    second = sweep_with_run(experiment, 0.7, [1.0, 0.0, 1.0], ["Paris", "Kyoto maybe", "Lima"])
    return first, second


def test_the_page_marks_the_changed_words_and_the_rows_that_got_worse(client, two_sweeps):
    (_, before), (_, after) = two_sweeps
    content = client.get(reverse("ui:compare"), {"a": before.pk, "b": after.pk}).content.decode()
    assert "<del>Tokyo</del>" in content and "<ins>Kyoto maybe</ins>" in content
    assert '<dd id="regression-count">1</dd>' in content
    assert '<dd id="mean-delta">-0.333</dd>' in content
    assert 'class="worse"' in content and "temperature" in content


def test_only_the_rows_that_got_worse_on_request(client, two_sweeps):
    (_, before), (_, after) = two_sweeps
    content = client.get(reverse("ui:compare"), {"a": before.pk, "b": after.pk, "worse": "1"}).content
    assert content.decode().count("<tr data-item=") == 1


def test_the_two_runs_ticked_on_the_leaderboard_are_compared(client, two_sweeps):
    (_, before), (_, after) = two_sweeps
    board = client.get(reverse("ui:leaderboard", args=[before.experiment_id])).content.decode()
    assert f'name="run" value="{before.pk}"' in board and 'action="/runs/compare/"' in board
    response = client.get("/runs/compare/", {"run": [after.pk, before.pk]})
    assert f'Run <a href="/runs/{after.pk}/">#{after.pk}</a> → <a href="/runs/{before.pk}/">' in (
        response.content.decode()
    )


@pytest.mark.parametrize("query", [{}, {"run": ["1"]}, {"a": "x", "b": "1"}, {"run": ["1", "2", "3"]}])
def test_anything_but_two_runs_is_a_400_saying_what_to_choose(client, query):
    response = client.get("/runs/compare/", query)
    assert response.status_code == 400
    assert b"Choose exactly two runs" in response.content


def test_runs_of_two_experiments_are_not_compared(client, two_sweeps):
    (_, before), _ = two_sweeps
    other = scored_run(make_experiment(make_endpoint("b"), name="Other"), {}, {"keyword": [1, 1, 1]})
    assert client.get("/runs/compare/", {"a": before.pk, "b": other.pk}).status_code == 404


def test_a_finished_sweep_links_to_its_comparison_with_the_previous_sweep(client, two_sweeps):
    (first, before), (second, after) = two_sweeps
    content = client.get(reverse("ui:sweep", args=[second.pk])).content.decode()
    assert f'href="/runs/compare/?a={before.pk}&amp;b={after.pk}"' in content
    assert (
        "Compare with the previous sweep"
        not in client.get(reverse("ui:sweep", args=[first.pk])).content.decode()
    )
