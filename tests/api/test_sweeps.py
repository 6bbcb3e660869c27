"""Launching, sizing and steering sweeps over the API."""

import pytest

import engine.sweep
from runs.models import Run, Sweep, SweepStatus
from runs.queue import wait_for_in_process_jobs
from tests.factories import make_endpoint, make_experiment
from tests.runs.sweep_helpers import quality_responder, wait_for_sweep

SPACE = {
    "temperature": [0.0, 1.0],
    "answer.user": ["Terse: capital of {{ country }}", "Capital of {{ country }}?"],
}


@pytest.fixture
def experiment(llm_stub):
    llm_stub.responder = quality_responder
    return make_experiment(make_endpoint(base_url=llm_stub.base_url), parameter_space=SPACE)


def sweep_url(experiment, action="sweep"):
    return f"/api/experiments/{experiment.pk}/{action}/"


@pytest.mark.django_db
def test_a_dry_run_estimates_and_creates_nothing(api, experiment):
    response = api.post(sweep_url(experiment), {"type": "grid", "dry_run": True}, format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["dry_run"] is True and data["total_runs"] == 4
    assert (
        data["estimate"]["calls"] == 12 and data["estimate"]["max_tokens"] > data["estimate"]["prompt_tokens"]
    )
    assert not Sweep.objects.exists() and not Run.objects.exists()


@pytest.mark.django_db
def test_a_dry_run_of_a_random_sweep_sizes_it_by_n_samples(api, experiment):
    body = {"type": "random", "n_samples": 3, "seed": 1, "dry_run": True}
    assert api.post(sweep_url(experiment), body, format="json").json()["total_runs"] == 3


BAD_LAUNCHES = [
    ({"parameter_space": {"temperature": []}}, "parameter_space", "empty list"),
    ({"type": "random"}, "n_samples", "n_samples"),
    ({"type": "guided", "n_samples": None}, "n_samples", "n_samples"),
    ({"type": "grid", "parameter_space": {"temperature": {"min": 0, "max": 1}}}, "parameter_space", "range"),
    ({"parameter_space": {"summary.user": ["x"]}}, "parameter_space", "summary"),
    ({"type": "sideways"}, "type", "not a valid choice"),
    ({"repeats": 0}, "repeats", "greater than or equal to 1"),
    ({"type": "grid", "options": {"top_k": 2}}, "options", "top_k"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("body,field,reason", BAD_LAUNCHES, ids=[f for _, f, _ in BAD_LAUNCHES])
def test_a_bad_launch_is_a_400_naming_the_field(api, experiment, body, field, reason):
    response = api.post(sweep_url(experiment), body, format="json")
    assert response.status_code == 400
    assert reason in str(response.json()[field]), response.json()
    assert not Sweep.objects.exists() and not Run.objects.exists()


@pytest.mark.django_db
def test_a_sweep_over_max_sweep_runs_is_refused_with_its_size(api, experiment, settings):
    settings.MAX_SWEEP_RUNS = 3
    response = api.post(sweep_url(experiment), {"type": "grid"}, format="json")
    assert response.status_code == 400
    message = response.json()["parameter_space"][0]
    assert "4 configurations" in message and "limit is 3" in message
    assert not Sweep.objects.exists()


@pytest.mark.django_db
def test_a_sweep_needs_an_endpoint_and_a_dataset(api):
    without_endpoint = make_experiment(None)
    response = api.post(sweep_url(without_endpoint), {}, format="json")
    assert response.status_code == 400 and "endpoint" in response.json()
    without_rows = make_experiment(make_endpoint(), items=[], name="Empty")
    response = api.post(sweep_url(without_rows), {}, format="json")
    assert response.status_code == 400 and "dataset" in response.json()
    assert not Sweep.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_launching_a_grid_creates_its_runs_and_finishes(api, experiment, alice):
    response = api.post(sweep_url(experiment), {"type": "grid", "max_concurrent": 2}, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["total_runs"] == 4 and data["estimate"]["calls"] == 12 and data["experiment"] == experiment.pk
    assert data["status"] in ("pending", "running")
    assert Run.objects.filter(sweep_id=data["id"]).count() == 4
    sweep = wait_for_sweep(Sweep.objects.get(pk=data["id"]))
    assert sweep.created_by == alice
    detail = api.get(f"/api/sweeps/{sweep.pk}/").json()
    assert detail["status"] == "completed" and detail["completed_runs"] == 4
    assert detail["tokens_used"] > 0 and detail["started_at"] and detail["finished_at"]
    for key in ("failed_runs", "cancelled_runs", "token_budget", "estimate", "error", "type"):
        assert key in detail
    listed = api.get("/api/sweeps/", {"experiment": experiment.pk, "status": "completed"}).json()
    assert [s["id"] for s in listed["results"]] == [sweep.pk]
    assert api.get("/api/sweeps/", {"status": "running"}).json()["count"] == 0


@pytest.mark.django_db(transaction=True)
def test_pause_resume_and_stop_follow_the_state_rules(api, experiment, llm_stub):
    assert api.post(sweep_url(experiment, "pause")).status_code == 409  # no sweep yet
    llm_stub.latency_ms = 60
    sweep_id = api.post(sweep_url(experiment), {"max_concurrent": 1}, format="json").json()["id"]
    assert api.post(sweep_url(experiment), {}, format="json").status_code == 409  # one at a time
    response = api.post(sweep_url(experiment, "resume"))
    assert response.status_code == 409 and "cannot become running" in response.json()["detail"]
    response = api.post(sweep_url(experiment, "pause"))
    assert response.status_code == 200 and response.json()["status"] == "paused"
    assert api.post(sweep_url(experiment, "pause")).status_code == 409
    wait_for_in_process_jobs(30)
    response = api.post(sweep_url(experiment, "resume"))
    assert response.status_code == 200 and response.json()["status"] == "running"
    response = api.post(sweep_url(experiment, "stop"))
    assert response.status_code == 200 and response.json()["status"] in ("stopping", "stopped")
    assert api.post(sweep_url(experiment, "stop")).status_code in (409,)  # stopping or stopped: not again
    sweep = wait_for_sweep(Sweep.objects.get(pk=sweep_id))
    assert sweep.status == SweepStatus.STOPPED
    for action in ("pause", "resume", "stop"):
        response = api.post(sweep_url(experiment, action))
        assert response.status_code == 409 and "no active sweep" in response.json()["detail"]


@pytest.mark.django_db
def test_a_dry_run_over_a_large_dataset_answers_at_once(api, llm_stub, monkeypatch):
    from engine.adapters.base import estimate_tokens
    from experiments.models import DatasetItem

    # Each row takes a while to render (about 12,000 characters); the estimate renders a
    # sample and stops at a deadline: past it, every row counts as the template's text.
    monkeypatch.setattr(engine.sweep, "ESTIMATE_SECONDS", 0.0)
    slow = "{% for i in range(2000) %}{{ range(500) | sum }}{% endfor %}{{ country }}"
    experiment = make_experiment(
        make_endpoint(base_url=llm_stub.base_url), pipeline=[{"name": "answer", "user": slow}], items=[]
    )
    DatasetItem.objects.bulk_create(
        DatasetItem(experiment=experiment, position=i, input={"country": f"C{i}"}) for i in range(5000)
    )
    response = api.post(sweep_url(experiment), {"type": "grid", "dry_run": True}, format="json")
    assert response.status_code == 200
    estimate = response.json()["estimate"]
    # Every row is counted, none rendered: a rendered row would count some 3,000 tokens.
    assert estimate["prompt_tokens"] == estimate["runs"] * 5000 * estimate_tokens(slow), estimate


@pytest.mark.django_db
def test_a_dry_run_of_the_issue_s_template_is_refused_at_save_and_bounded_at_run(api, llm_stub):
    loops = "{% for i in range(100000) %}{% for j in range(300) %}{% endfor %}{% endfor %}"
    body = {"name": "spin", "pipeline": [{"name": "answer", "user": loops}]}
    response = api.post("/api/experiments/", body, format="json")
    assert response.status_code == 400 and "TEMPLATE_MAX_LOOP_ITERATIONS" in response.json()["pipeline"][0]
