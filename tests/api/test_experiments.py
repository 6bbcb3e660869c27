"""/api/experiments/: CRUD, with the same validation as the model and the UI."""

import pytest

from experiments.models import Experiment
from runs.models import Sweep, SweepStatus
from tests.api.helpers import KEYWORD, STUB_DATASET, STUB_PIPELINE
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


def body(**fields):
    return {
        "name": "Capitals",
        "description": "Which prompt names capitals best",
        "pipeline": STUB_PIPELINE,
        "dataset": STUB_DATASET,
        "parameter_space": {"temperature": [0.0, 0.7]},
        "scorers": [KEYWORD],
        **fields,
    }


def test_alice_creates_an_experiment_with_its_dataset(api, alice):
    endpoint = make_endpoint()
    response = api.post("/api/experiments/", body(endpoint=endpoint.pk), format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["created_by"] == "alice" and data["endpoint"] == endpoint.pk
    assert data["dataset"] == STUB_DATASET and data["dataset_size"] == 3
    experiment = Experiment.objects.get(pk=data["id"])
    assert experiment.created_by == alice
    assert list(experiment.items.values_list("position", flat=True)) == [0, 1, 2]


def test_created_by_cannot_be_set_by_the_caller(api, bob):
    response = api.post("/api/experiments/", body(created_by="bob"), format="json")
    assert response.json()["created_by"] == "alice"


def test_detail_returns_the_dataset_and_the_list_only_its_size(api):
    experiment = make_experiment()
    detail = api.get(f"/api/experiments/{experiment.pk}/").json()
    assert [row["reference"] for row in detail["dataset"]][0] == "Paris is the capital of France."
    listed = api.get("/api/experiments/").json()
    assert listed["count"] == 1
    assert "dataset" not in listed["results"][0] and listed["results"][0]["dataset_size"] == 3


def test_writing_the_dataset_replaces_the_rows_and_leaving_it_out_keeps_them(api):
    experiment = make_experiment()
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"description": "new"}, format="json")
    assert response.status_code == 200 and response.json()["dataset_size"] == 3
    rows = [{"input": {"country": "Chile"}, "reference": "Santiago"}]
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"dataset": rows}, format="json")
    assert response.json()["dataset"] == rows
    assert list(experiment.items.values_list("reference", flat=True)) == ["Santiago"]


def test_put_replaces_the_definition(api):
    experiment = make_experiment()
    pipeline = [{"name": "shout", "user": "SAY {{ country }}"}]
    response = api.put(
        f"/api/experiments/{experiment.pk}/",
        body(pipeline=pipeline, parameter_space={"shout.user": ["A {{ country }}", "B {{ country }}"]}),
        format="json",
    )
    assert response.status_code == 200, response.json()
    experiment.refresh_from_db()
    assert experiment.pipeline == pipeline and experiment.stage_names == ["shout"]


BAD_INPUT = [
    ("pipeline", {"pipeline": [{"name": "answer", "user": "Capital of {{ country ?"}]}, "template"),
    ("pipeline", {"pipeline": []}, "at least one stage"),
    ("parameter_space", {"parameter_space": {"temperature": []}}, "empty list"),
    ("parameter_space", {"parameter_space": {"nope.temperature": [1]}}, "nope"),
    ("parameter_space", {"parameter_space": {"answer.user": ["{% if %}"]}}, "variant 1"),
    ("scorers", {"scorers": [{"type": "vibes", "weight": 1}]}, "unknown scorer type 'vibes'"),
    (
        "scorers",
        {"scorers": [{"type": "format", "config": {"check": "structure", "schema": {"type": 12}}}]},
        "not a valid JSON Schema",
    ),
    (
        "scorers",
        {"scorers": [{"type": "keyword", "weight": -1, "config": {"required_present": ["x"]}}]},
        "weight",
    ),
    ("dataset", {"dataset": [{"reference": "no input"}]}, "required"),
    ("endpoint", {"endpoint": 99999}, "object does not exist"),
    ("name", {"name": ""}, "blank"),
]


@pytest.mark.parametrize("field,fields,reason", BAD_INPUT, ids=[f"{f}-{r}" for f, _, r in BAD_INPUT])
def test_bad_input_is_a_400_naming_the_field_and_the_reason(api, field, fields, reason):
    response = api.post("/api/experiments/", body(**fields), format="json")
    assert response.status_code == 400
    errors = response.json()
    assert field in errors, errors
    assert reason in str(errors[field])
    assert not Experiment.objects.exists()


def test_a_refused_update_changes_nothing(api):
    experiment = make_experiment()
    before = (experiment.pipeline, experiment.parameter_space, experiment.scorers, experiment.updated_at)
    response = api.patch(
        f"/api/experiments/{experiment.pk}/",
        {
            "name": "Renamed",
            "dataset": [{"input": {"country": "Chile"}, "reference": "Santiago"}],
            "scorers": [{"type": "vibes"}],
        },
        format="json",
    )
    assert response.status_code == 400 and "scorers" in response.json()
    experiment.refresh_from_db()
    assert (
        experiment.pipeline,
        experiment.parameter_space,
        experiment.scorers,
        experiment.updated_at,
    ) == before
    assert experiment.name == "Capitals" and experiment.items.count() == 3


def test_a_partial_update_is_checked_against_the_stored_pipeline(api):
    experiment = make_experiment()
    response = api.patch(
        f"/api/experiments/{experiment.pk}/", {"parameter_space": {"summary.user": ["x"]}}, format="json"
    )
    assert response.status_code == 400 and "summary" in str(response.json()["parameter_space"])


def test_the_definition_is_frozen_while_a_sweep_runs(api):
    experiment = make_experiment()
    Sweep.objects.create(experiment=experiment, status=SweepStatus.RUNNING)
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"scorers": []}, format="json")
    assert response.status_code == 409 and "scorers" in response.json()["detail"]
    renamed = api.patch(f"/api/experiments/{experiment.pk}/", {"name": "Still ok"}, format="json")
    assert renamed.status_code == 200
    unchanged = {"name": "Still ok", "pipeline": experiment.pipeline, "scorers": experiment.scorers}
    assert api.put(f"/api/experiments/{experiment.pk}/", unchanged, format="json").status_code == 200
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"dataset": []}, format="json")
    assert response.status_code == 409 and "dataset" in response.json()["detail"]
    assert api.delete(f"/api/experiments/{experiment.pk}/").status_code == 409
    experiment.refresh_from_db()
    assert experiment.scorers and experiment.name == "Still ok"


def test_deleting_an_experiment(api):
    experiment = make_experiment()
    assert api.delete(f"/api/experiments/{experiment.pk}/").status_code == 204
    assert not Experiment.objects.exists()


def test_bob_sees_alices_experiments(api, bob_api):
    api.post("/api/experiments/", body(), format="json")
    assert bob_api.get("/api/experiments/").json()["count"] == 1


TWO_STAGES = [
    {"name": "answer", "user": "Capital of {{ country }}?"},
    {"name": "rewrite", "user": "Rewrite this answer: {{ answer }}"},
]
ROWS = [{"input": {"country": "France"}, "reference": "Paris"}]


def test_a_template_reading_a_variable_nothing_provides_is_refused_with_those_that_exist(api):
    body = {"name": "Two stages", "pipeline": TWO_STAGES, "dataset": ROWS}
    response = api.post("/api/experiments/", body, format="json")
    assert response.status_code == 400
    [message] = response.json()["pipeline"]
    assert message.startswith("Stage 'rewrite' user template uses {{ answer }}, which no dataset column")
    assert (
        "The output of stage 'answer' is {{ stages.answer }} (or {{ previous }} in the next stage)" in message
    )
    assert "Variables that exist: country (dataset column), previous (" in message
    assert not Experiment.objects.exists()


def test_an_update_is_checked_against_the_stored_dataset(api):
    experiment = make_experiment(pipeline=[TWO_STAGES[0]])
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"pipeline": TWO_STAGES}, format="json")
    assert response.status_code == 400 and "{{ answer }}" in response.json()["pipeline"][0]


def test_a_prompt_variant_is_checked_too(api):
    experiment = make_experiment()
    space = {"answer.user": ["Capital of {{ country }}?", "Capital of {{ land }}?"]}
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"parameter_space": space}, format="json")
    assert response.status_code == 400
    assert response.json()["parameter_space"][0].startswith("'answer.user' variant 2 uses {{ land }}")


def test_built_ins_loops_and_earlier_stages_are_fine(api):
    pipeline = [
        TWO_STAGES[0],
        {
            "name": "rewrite",
            "user": "{% for w in previous.split() %}{{ w }}{% endfor %} {{ stages.answer }} {{ range(2)|list }}",
        },
    ]
    response = api.post(
        "/api/experiments/", {"name": "ok", "pipeline": pipeline, "dataset": ROWS}, format="json"
    )
    assert response.status_code == 201, response.json()


def test_without_a_dataset_yet_the_variables_are_checked_when_it_comes(api):
    response = api.post("/api/experiments/", {"name": "later", "pipeline": TWO_STAGES[:1]}, format="json")
    assert response.status_code == 201


def test_a_patch_may_send_dataset_rows_without_a_reference(api):
    experiment = make_experiment()
    rows = [{"input": {"country": "Chile"}}, {"input": {"country": "Peru"}, "reference": "Lima"}]
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"dataset": rows}, format="json")
    assert response.status_code == 200, response.json()
    assert list(experiment.items.values_list("reference", flat=True)) == ["", "Lima"]
