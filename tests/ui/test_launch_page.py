"""Launching: the plan's estimate is confirmed before anything runs; errors at the field."""

import pytest
from django.urls import reverse

from runs.models import Sweep, SweepStatus
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment():
    return make_experiment(make_endpoint(), parameter_space={"temperature": [0.0, 0.5, 1.0]})


def launch_data(**fields) -> dict:
    return {"type": "grid", "repeats": "1", "max_concurrent": "2", "max_tokens": "5000"} | fields


def test_the_confirmation_shows_runs_calls_and_tokens_and_starts_nothing(client, experiment):
    response = client.post(reverse("ui:launch", args=[experiment.pk]), launch_data(preview="1"))
    estimate = response.context["estimate"]
    assert (estimate["runs"], estimate["calls"]) == (3, 9)
    content = response.content.decode()
    assert '<dd id="estimate-runs">3</dd>' in content and '<dd id="estimate-calls">9</dd>' in content
    assert f'<dd id="estimate-tokens">{estimate["max_tokens"]}</dd>' in content
    assert "Confirm and launch 3 runs" in content
    assert not Sweep.objects.exists()


def test_repeats_multiply_the_calls(client, experiment):
    response = client.post(reverse("ui:launch", args=[experiment.pk]), launch_data(repeats="2", preview="1"))
    assert response.context["estimate"]["calls"] == 18


def test_confirming_launches_the_sweep_and_opens_its_live_view(client, experiment, alice):
    response = client.post(reverse("ui:launch", args=[experiment.pk]), launch_data(confirm="1"))
    sweep = Sweep.objects.get()
    assert response.status_code == 302 and response.url == reverse("ui:sweep", args=[sweep.pk])
    assert (sweep.total_runs, sweep.max_concurrent, sweep.token_budget) == (3, 2, 5000)
    assert sweep.created_by == alice


def test_a_random_sweep_without_samples_is_refused_at_the_samples_field(client, experiment):
    response = client.post(
        reverse("ui:launch", args=[experiment.pk]), launch_data(type="random", preview="1")
    )
    assert "n_samples" in response.context["form"].errors
    assert "needs n_samples" in response.context["form"].errors["n_samples"][0]


@pytest.mark.parametrize("field, value", [("repeats", "0"), ("max_concurrent", "5000"), ("seed", "-1")])
def test_limits_are_the_apis_and_shown_at_their_fields(client, experiment, field, value):
    data = launch_data(preview="1") | {field: value}
    errors = client.post(reverse("ui:launch", args=[experiment.pk]), data).context["form"].errors
    assert set(errors) == {field}


def test_a_grid_over_a_range_is_explained_above_the_form(client):
    experiment = make_experiment(make_endpoint(), parameter_space={"top_p": {"min": 0.1, "max": 1.0}})
    response = client.post(reverse("ui:launch", args=[experiment.pk]), launch_data(preview="1"))
    assert "A grid needs lists of values" in response.context["form"].non_field_errors()[0]


def test_an_experiment_without_endpoint_or_rows_cannot_be_confirmed(client):
    no_endpoint = make_experiment(name="No endpoint")
    response = client.post(reverse("ui:launch", args=[no_endpoint.pk]), launch_data(preview="1"))
    assert b"Choose an endpoint for this experiment" in response.content
    no_rows = make_experiment(make_endpoint(), items=[], name="Empty")
    response = client.post(reverse("ui:launch", args=[no_rows.pk]), launch_data(preview="1"))
    assert b"no dataset rows" in response.content and "estimate" not in response.context


def test_a_second_sweep_is_refused_while_one_is_active(client, experiment):
    active = Sweep.objects.create(experiment=experiment, status=SweepStatus.RUNNING, total_runs=3)
    page = client.get(reverse("ui:launch", args=[experiment.pk])).content.decode()
    assert f'href="/sweeps/{active.pk}/"' in page
    response = client.post(reverse("ui:launch", args=[experiment.pk]), launch_data(confirm="1"))
    assert b"already has an active sweep" in response.content
    assert Sweep.objects.count() == 1


def racing_experiment():
    rows = [({"country": f"Country {i}", "capital": f"City {i}"}, "") for i in range(40)]
    return make_experiment(
        make_endpoint(), name="Race", items=rows, parameter_space={"temperature": [0.0, 0.5]}
    )


def test_a_race_is_previewed_with_its_slices_and_first_round(client):
    experiment = racing_experiment()
    data = launch_data(type="racing", min_items="5", preview="1")
    response = client.post(reverse("ui:launch", args=[experiment.pk]), data)
    assert response.context["estimate"]["race"]["schedule"] == [5, 10, 20, 40]
    content = response.content.decode()
    assert "every candidate starts on 5 rows" in content and "go on to 10, 20, 40 rows" in content
    assert '<span id="estimate-first-round">10</span>' in content
    assert not Sweep.objects.exists()


def test_a_racing_option_out_of_range_is_refused_at_its_field(client):
    experiment = racing_experiment()
    response = client.post(
        reverse("ui:launch", args=[experiment.pk]), launch_data(type="racing", eta="1", preview="1")
    )
    assert "must be a number above 1" in response.context["form"].errors["eta"][0]


def test_confirming_a_race_keeps_its_options(client):
    experiment = racing_experiment()
    data = launch_data(type="racing", min_items="5", confidence="0.9", confirm="1")
    assert client.post(reverse("ui:launch", args=[experiment.pk]), data).status_code == 302
    sweep = Sweep.objects.get()
    assert sweep.type == "racing" and sweep.config["options"] == {"min_items": 5, "confidence": 0.9}
    assert sweep.race["schedule"] == [5, 10, 20, 40]
