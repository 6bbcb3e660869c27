"""Racing sweeps over the API: the estimate, refused options, and a finished race's
rounds, calls saved and leaderboard."""

import pytest

from runs.models import Run, Sweep
from tests.factories import make_endpoint, make_experiment
from tests.graded_stub import by_temperature, graded_rows
from tests.runs.sweep_helpers import wait_for_sweep

ACCURACY = {0.0: 1.0, 0.5: 0.05, 1.0: 0.0}
KEYWORD = {"type": "keyword", "weight": 1, "config": {"required_present": ["{{ reference }}"]}}


@pytest.fixture
def experiment(llm_stub):
    llm_stub.responder = by_temperature(ACCURACY)
    return make_experiment(
        make_endpoint(base_url=llm_stub.base_url),
        pipeline=[{"name": "answer", "user": "Question {{ q }}"}],
        parameter_space={"temperature": list(ACCURACY)},
        scorers=[KEYWORD],
        items=graded_rows(30),
    )


def sweep_url(experiment):
    return f"/api/experiments/{experiment.pk}/sweep/"


@pytest.mark.django_db
def test_a_dry_run_shows_the_slices_and_the_first_round_against_the_grid(api, experiment):
    body = {"type": "racing", "options": {"min_items": 5}, "dry_run": True}
    response = api.post(sweep_url(experiment), body, format="json")
    assert response.status_code == 200, response.json()
    estimate = response.json()["estimate"]
    assert estimate["calls"] == 90  # the worst case: nobody dropped, the full grid
    assert estimate["race"] == {
        "schedule": [5, 10, 20, 30],
        "first_round_calls": 15,
        "grid_calls": 90,
        "confidence": 0.95,
    }
    assert not Sweep.objects.exists()


BAD_RACES = [
    ({"options": {"eta": 1}}, "options", "eta"),
    ({"options": {"confidence": 1.5}}, "options", "confidence"),
    ({"options": {"min_items": 31}}, "options", "30 rows"),
    ({"options": {"top_k": 3}}, "options", "top_k"),
    ({"parameter_space": {"temperature": {"min": 0, "max": 1}}}, "n_samples", "n_samples"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("body,field,reason", BAD_RACES, ids=[r for _, _, r in BAD_RACES])
def test_a_bad_race_is_a_400_naming_the_field(api, experiment, body, field, reason):
    response = api.post(sweep_url(experiment), {"type": "racing", **body}, format="json")
    assert response.status_code == 400
    assert reason in str(response.json()[field]), response.json()


@pytest.mark.django_db(transaction=True)
def test_a_finished_race_reports_its_rounds_calls_saved_and_leaderboard(api, experiment, llm_stub):
    response = api.post(sweep_url(experiment), {"type": "racing", "seed": 1}, format="json")
    assert response.status_code == 201, response.json()
    sweep = wait_for_sweep(Sweep.objects.get(pk=response.json()["id"]))
    race = api.get(f"/api/sweeps/{sweep.pk}/").json()["race"]
    assert race["schedule"] == [10, 20, 30] and race["finished"] and race["candidates"] == 1
    assert race["rounds"][0]["candidates"] == 3 and len(race["rounds"][0]["eliminated"]) == 2
    assert (
        (race["calls"], race["grid_calls"], race["calls_saved"]) == (30, 90, 60) == (llm_stub.calls, 90, 60)
    )
    best = Run.objects.get(sweep=sweep, config={"temperature": 0.0})
    runs = api.get("/api/runs/", {"sweep": sweep.pk, "ordering": "score"}).json()["results"]
    assert {r["id"]: r["eliminated_after"] for r in runs} == {
        r.pk: (None if r == best else 10) for r in sweep.runs.all()
    }
    board = api.get("/api/runs/leaderboard/", {"experiment": experiment.pk, "sweep": sweep.pk}).json()
    assert [row["eliminated_after"] for row in board["results"]] == [None, 10, 10]
    assert board["results"][0]["run_id"] == best.pk and board["results"][0]["tied_with_leader"] is True


@pytest.mark.django_db
def test_a_grid_sweep_has_no_race(api, experiment):
    response = api.post(sweep_url(experiment), {"type": "grid", "dry_run": True}, format="json")
    assert "race" not in response.json()["estimate"]
