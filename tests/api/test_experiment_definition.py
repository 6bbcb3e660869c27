"""The definition file over the API: GET .../definition/ writes it, POST .../import/ reads it
(or a promptfoo config with ?format=promptfoo)."""

import json

import pytest
import yaml

from endpoints.models import Endpoint
from experiments.definition import definition_of
from experiments.models import Experiment
from projects.models import Project, Role
from tests.factories import add_member, make_endpoint, make_experiment, team_project

pytestmark = pytest.mark.django_db

LINKED = {
    "provider": [{"model": "stub-small", "temperature": 0.2}, {"model": "stub-large", "temperature": 0.7}],
    "answer.user": ["Capital of {{ country }}?", "Name the capital of {{ country }}."],
}


@pytest.fixture
def experiment(alice):
    return make_experiment(
        make_endpoint("local"),
        description="Capitals, linked",
        parameter_space=LINKED,
        sweep_defaults={"type": "grid", "max_tokens": 9000},
    )


def import_(client, body: str, query: str = ""):
    return client.post(f"/api/experiments/import/{query}", body, content_type="application/yaml")


def test_the_definition_is_yaml_by_default_and_json_on_request(api, experiment):
    response = api.get(f"/api/experiments/{experiment.pk}/definition/")
    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert 'filename="capitals.yaml"' in response["Content-Disposition"]
    assert yaml.safe_load(response.content) == definition_of(experiment)
    response = api.get(f"/api/experiments/{experiment.pk}/definition/?format=json")
    assert json.loads(response.content) == definition_of(experiment)


def test_exported_then_imported_into_another_project_it_is_the_same_experiment(api, alice, experiment):
    other = Project.create_for(alice, "Elsewhere")
    make_endpoint("local", project=other)
    text = api.get(f"/api/experiments/{experiment.pk}/definition/").content.decode()
    response = import_(api, text, f"?project={other.pk}")
    assert response.status_code == 201, response.json()
    assert response.json()["created"] is True and response.json()["unmapped"] == []
    copy = Experiment.objects.get(pk=response.json()["id"])
    assert copy.project == other and definition_of(copy) == definition_of(experiment)


def test_importing_again_needs_update(api, experiment):
    text = api.get(f"/api/experiments/{experiment.pk}/definition/?format=json").content.decode()
    refused = import_(api, text)
    assert refused.status_code == 400 and "already has an experiment 'Capitals'" in refused.json()["name"][0]
    changed = text.replace("Capitals, linked", "Capitals, relinked")
    response = import_(api, changed, "?update=true")
    assert response.status_code == 200 and response.json() == {
        "id": experiment.pk,
        "name": "Capitals",
        "created": False,
        "unmapped": [],
    }
    experiment.refresh_from_db()
    assert experiment.description == "Capitals, relinked"


def test_a_bad_definition_is_a_400_naming_the_field_and_the_line(api, experiment):
    body = "name: New\npipeline:\n  - name: a\n    user: hi\nscorers:\n  - type: keyword\n    config: {}\n"
    response = import_(api, body)
    assert response.status_code == 400
    assert response.json()["scorers"][0].startswith("request body:6: scorers: Scorer 1 (keyword)")


def test_promptfoo_config_over_the_api_uses_the_projects_endpoint_and_lists_what_it_left(api, experiment):
    config = (
        "prompts: ['Capital of {{country}}?']\n"
        "providers:\n  - id: openai:chat:stub-large\n    config: {apiBaseUrl: 'http://127.0.0.1:9/v1'}\n"
        "tests:\n  - vars: {country: France}\n    assert:\n      - {type: javascript, value: 'output'}\n"
    )
    response = import_(api, config, "?format=promptfoo")
    assert response.status_code == 201, response.json()
    assert response.json()["unmapped"] == [
        {"location": "tests[0].assert[0]", "item": "javascript", "reason": "no PromptLooper scorer does this"}
    ]
    imported = Experiment.objects.get(pk=response.json()["id"])
    assert imported.endpoint == experiment.endpoint and Endpoint.objects.count() == 1


def test_a_promptfoo_file_reference_cannot_come_over_the_api(api, alice):
    response = import_(api, "prompts: [file://p.txt]\nproviders: [openai:gpt-4o]\n", "?format=promptfoo")
    assert response.status_code == 400
    assert "import the config from a file" in response.json()["prompts[0]"][0]


def test_an_editor_may_import_but_not_create_endpoints(bob_api, bob, experiment):
    config = "prompts: ['Hi {{ name }}']\nproviders: [openai:chat:gpt-4o-mini]\ntests: [{vars: {name: a}}]\n"
    response = import_(bob_api, config, "?format=promptfoo")
    assert response.status_code == 403 and "admin role" in response.json()["detail"]
    assert not Endpoint.objects.filter(base_url__contains="openai").exists()
    add_member(team_project(), bob, Role.VIEWER)
    assert import_(bob_api, "name: x\npipeline: [{name: a, user: hi}]\n").status_code == 403


def test_an_update_while_a_sweep_runs_is_a_409_and_changes_nothing(api, experiment):
    from runs.models import Sweep, SweepStatus

    Sweep.objects.create(experiment=experiment, status=SweepStatus.RUNNING)
    text = api.get(f"/api/experiments/{experiment.pk}/definition/").content.decode()
    response = import_(api, text.replace("Capitals, linked", "changed"), "?update=1")
    assert response.status_code == 409 and "stop it before changing" in response.json()["detail"]
    experiment.refresh_from_db()
    assert experiment.description == "Capitals, linked"


PROMPT = "prompts: ['Hi {{ name }}']\n"
TESTS = "tests: [{vars: {name: a}}]\n"
PROVIDER = "providers: [{id: 'openai:chat:m', config: {apiBaseUrl: 'http://127.0.0.1:9/v1'}}]\n"


@pytest.mark.parametrize(
    ("config", "field", "says"),
    [
        (PROMPT + PROVIDER + "tests: [{vars: [a]}]\n", "tests[0].vars", "must be an object of variables"),
        (PROMPT + PROVIDER + "tests: 5\n", "tests", "must be a list of tests or a tests file, not a number"),
        (PROMPT + PROVIDER + "tests: [7]\n", "tests[0]", "a test is an object or a tests file"),
        (PROMPT + PROVIDER + "tests: [{vars: {name: a}, assert: x}]\n", "tests[0].assert", "a list of"),
        (PROMPT + PROVIDER + "defaultTest: [a]\n", "defaultTest", "must be an object of vars and assert"),
        (PROMPT + PROVIDER + "defaultTest: {vars: 3}\n", "defaultTest.vars", "an object of variables"),
        (PROMPT + "providers: [{id: 'openai:chat:m', config: x}]\n", "providers[0].config", "an object"),
        (PROMPT + "providers: [{'openai:chat:m': 5}]\n", "providers[0].openai:chat:m", "an object"),
        (PROMPT + "providers: [[openai:chat:m]]\n", "providers[0]", "a provider id or {id, config}"),
        (PROMPT + "providers: 3\n", "providers", "a provider or a list of providers"),
        ("prompts: 3\n" + PROVIDER, "prompts", "a prompt or a list of prompts"),
    ],
)
def test_a_promptfoo_config_of_the_wrong_shape_is_a_400_naming_the_place(api, alice, config, field, says):
    response = import_(api, config, "?format=promptfoo")
    assert response.status_code == 400, response.content
    message = response.json()[field][0]
    assert f"{field}: " in message and says in message
    assert not Experiment.objects.exists() and not Endpoint.objects.exists()


def test_a_default_test_from_a_file_is_listed_as_not_imported(api, alice):
    config = PROMPT + PROVIDER + "defaultTest: file://defaults.yaml\ntests: [{vars: {name: a}}]\n"
    response = import_(api, config, "?format=promptfoo")
    assert response.status_code == 201, response.json()
    assert response.json()["unmapped"] == [
        {
            "location": "defaultTest",
            "item": "file://defaults.yaml",
            "reason": "not imported: write the default test in the config",
        }
    ]


def provider_at(url: str) -> str:
    return (
        PROMPT
        + f"providers:\n  - id: openai:chat:m\n    config: {{apiBaseUrl: '{url}'}}\ntests: [{{vars: {{name: a}}}}]\n"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://models.example/v1", "base_url: Use an http:// or https:// URL"),
        ("http://127.0.0.1:9/" + "v" * 600, "base_url: Ensure this field has no more than 500 characters"),
        ("http://[::1/v1", "base_url: Enter a valid URL"),
    ],
)
def test_a_promptfoo_provider_whose_endpoint_the_api_would_refuse_is_a_400_naming_it(api, alice, url, says):
    response = import_(api, provider_at(url), "?format=promptfoo")
    assert response.status_code == 400, response.content
    message = response.json()["providers[0].config.apiBaseUrl"][0]
    assert message.startswith("4: providers[0].config.apiBaseUrl: no endpoint can be created")
    assert says in message
    assert not Endpoint.objects.exists() and not Experiment.objects.exists()


def test_a_promptfoo_provider_on_a_long_host_name_gets_an_endpoint_name_that_fits(api, alice):
    host = ".".join(["a" * 60] * 3)  # 182 characters: a valid host name, too long for an endpoint name
    response = import_(api, provider_at(f"https://{host}/v1"), "?format=promptfoo")
    assert response.status_code == 201, response.json()
    response = import_(api, provider_at(f"https://{host}/v2"), "?format=promptfoo&update=true")
    assert response.status_code == 200, response.json()
    assert list(Endpoint.objects.order_by("id").values_list("name", "base_url")) == [
        (host[:90], f"https://{host}/v1"),
        (f"{host[:90]}-2", f"https://{host}/v2"),
    ]


def test_a_promptfoo_api_host_is_called_over_https(api, alice):
    config = PROMPT + "providers: [{id: 'openai:chat:m', config: {apiHost: models.example}}]\n" + TESTS
    response = import_(api, config, "?format=promptfoo")
    assert response.status_code == 201, response.json()
    assert Endpoint.objects.get().base_url == "https://models.example/v1"
    response = import_(
        api,
        PROMPT + "providers: [{id: 'openai:chat:m', config: {apiHost: 'a b'}}]\n",
        "?format=promptfoo&update=true",
    )
    assert response.status_code == 400
    assert "Enter a valid URL" in response.json()["providers[0].config.apiHost"][0]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (
            "name: x\npipeline: [{name: a, user: hi}]\ndataset:\n  - {input: {a: .nan}}\n",
            "dataset.0",
            "nan is not",
        ),
        (
            "name: " + "n" * 300 + "\npipeline: [{name: a, user: hi}]\n",
            "name",
            "at most 200 characters, not 300",
        ),
        ("name: x\npipeline: [{name: a, user: hi}]\nsweep: {repeats: 0}\n", "sweep.repeats", "from 1 to 100"),
        (
            "name: x\npipeline: [{name: a, user: '{{ q }}'}]\ndataset: [{input: {a: 1}}]\n",
            "pipeline",
            "uses {{ q }}, which no dataset column",
        ),
    ],
)
def test_a_definition_the_experiments_api_would_refuse_is_a_400(api, alice, body, field, says):
    response = import_(api, body)
    assert response.status_code == 400, response.content
    assert says in response.json()[field][0]
    assert not Experiment.objects.exists()


def test_a_long_promptfoo_description_names_the_experiment_by_its_first_200_characters(api, alice):
    config = "description: " + "d" * 250 + "\n" + provider_at("http://127.0.0.1:9/v1")
    response = import_(api, config, "?format=promptfoo")
    assert response.status_code == 201, response.json()
    assert Experiment.objects.get().name == "d" * 200


def test_a_promptfoo_prompt_reading_a_variable_no_test_sets_is_a_400(api, alice):
    config = provider_at("http://127.0.0.1:9/v1").replace("{name: a}", "{nome: a}")
    response = import_(api, config, "?format=promptfoo")
    assert response.status_code == 400
    assert "uses {{ name }}, which no dataset column" in response.json()["pipeline"][0]
