"""GET /api/experiments/{id}/export/: the best configuration as JSON, .env or YAML."""

import io
import json

import pytest
import yaml
from dotenv import dotenv_values

from runs.export import from_env
from tests.api.helpers import scored_run
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db

TRICKY = "Terse:\nName the capital of {{ country }}.\n  'single' \"double\" back\\slash \\n # not a comment\n"
PIPELINE = [
    {"name": "answer", "system": "Be brief.", "user": "Capital of {{ country }}?", "params": {"top_p": 0.9}},
    {"name": "check", "user": "Is this right? {{ previous }}", "model": "stub-judge"},
]


@pytest.fixture
def experiment(db):
    return make_experiment(make_endpoint(api_key="sk-secret"), pipeline=PIPELINE, parameter_space={})


@pytest.fixture
def best(experiment):
    scored_run(experiment, {"temperature": 1.0}, {"keyword": [0, 0, 1]})
    config = {"temperature": 0.0, "answer.user": TRICKY, "answer.max_tokens": 20, "check.temperature": None}
    return scored_run(experiment, config, {"keyword": [1, 1, 1]})


def download(api, experiment, fmt):
    response = api.get(f"/api/experiments/{experiment.pk}/export/", {"format": fmt})
    assert response.status_code == 200, response.content
    best = experiment.runs.order_by("-weighted_score").first()
    filename = f"promptlooper-{experiment.pk}-run-{best.pk}.{fmt}"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    return response.content.decode()


def test_json_export_has_the_config_applied_to_each_stage(api, experiment, best):
    data = json.loads(download(api, experiment, "json"))
    assert data["metadata"]["run_id"] == best.pk and data["metadata"]["weighted_score"] == 1.0
    assert (
        data["metadata"]["experiment"] == "Capitals" and data["metadata"]["config_hash"] == best.config_hash
    )
    assert data["metadata"]["exported_at"]
    assert data["config"] == best.config
    answer, check = data["stages"]
    assert answer == {
        "name": "answer",
        "model": "stub-small",
        "params": {"top_p": 0.9, "temperature": 0.0, "max_tokens": 20},
        "system": "Be brief.",
        "user": TRICKY,
    }
    assert (
        check["model"] == "stub-judge" and check["params"] == {} and check["user"].startswith("Is this right")
    )
    assert "sk-secret" not in json.dumps(data)


def test_all_three_formats_read_back_to_the_same_configuration(api, experiment, best):
    as_json = json.loads(download(api, experiment, "json"))
    as_yaml = yaml.safe_load(download(api, experiment, "yaml"))
    as_env = from_env(dotenv_values(stream=io.StringIO(download(api, experiment, "env"))))
    for parsed in (as_yaml, as_env):
        assert parsed["config"] == as_json["config"] and parsed["stages"] == as_json["stages"]
        assert {k: v for k, v in parsed["metadata"].items() if k != "exported_at"} == {
            k: v for k, v in as_json["metadata"].items() if k != "exported_at"
        }


def test_the_env_file_quotes_multi_line_templates_so_dotenv_reads_them_exactly(api, experiment, best):
    text = download(api, experiment, "env")
    values = dotenv_values(stream=io.StringIO(text))
    assert values["PROMPTLOOPER_STAGE_1_USER"] == TRICKY
    assert values["PROMPTLOOPER_STAGE_1_MODEL"] == "stub-small"
    assert json.loads(values["PROMPTLOOPER_CONFIG"]) == best.config
    assert values["PROMPTLOOPER_RUN_ID"] == str(best.pk)


def test_the_default_format_is_json_and_accept_can_choose(api, experiment, best):
    response = api.get(f"/api/experiments/{experiment.pk}/export/")
    assert response["Content-Type"].startswith("application/json")
    response = api.get(f"/api/experiments/{experiment.pk}/export/", HTTP_ACCEPT="application/yaml")
    assert yaml.safe_load(response.content)["metadata"]["run_id"] == best.pk


def test_without_a_completed_run_there_is_nothing_to_export(api, experiment):
    for fmt in ("json", "yaml", "env"):
        response = api.get(f"/api/experiments/{experiment.pk}/export/", {"format": fmt})
        assert response.status_code == 404
        assert "sweep" in response.content.decode()


def test_an_unknown_format_is_a_404(api, experiment, best):
    assert api.get(f"/api/experiments/{experiment.pk}/export/", {"format": "xml"}).status_code == 404


def test_a_best_run_that_no_longer_fits_the_experiment_is_a_409(api, experiment, best):
    experiment.endpoint.default_model = ""
    experiment.endpoint.save()
    response = api.get(f"/api/experiments/{experiment.pk}/export/", {"format": "yaml"})
    assert response.status_code == 409 and "no model" in yaml.safe_load(response.content)["detail"]


@pytest.mark.parametrize("fmt", ["json", "yaml", "env"])
def test_options_on_the_export_route_describes_it_in_every_format(api, experiment, fmt):
    response = api.options(f"/api/experiments/{experiment.pk}/export/?format={fmt}")
    assert response.status_code == 200
    assert "Export config" in response.content.decode()
