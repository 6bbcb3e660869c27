"""An endpoint the parameter space or a judge names must be one of the experiment's
project: the API, the editor, a sweep launch and a definition import all refuse one
that is not (experiments/validation.py: extra_params_for)."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from experiments.definition import DefinitionError, import_definition, load_definition
from experiments.models import Experiment
from projects.models import Project
from runs.models import Sweep
from tests.factories import make_endpoint, make_experiment, team_project

pytestmark = pytest.mark.django_db

STAGE = {"name": "answer", "user": "Capital of {{ country }}?"}
DATASET = [{"input": {"country": "France"}, "reference": "Paris"}]
JUDGE = {"type": "llm_judge", "config": {"endpoint": "ghost"}}


@pytest.fixture
def api(alice) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    return client


@pytest.fixture
def elsewhere(alice):
    """An endpoint 'ghost' in another project of alice's: still not this project's."""
    return make_endpoint("ghost", project=Project.create_for(alice, "Elsewhere"))


def create(api, **fields):
    body = {"project": team_project().pk, "name": "x", "pipeline": [STAGE], "dataset": DATASET, **fields}
    return api.post("/api/experiments/", body, format="json")


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        (
            {"parameter_space": {"endpoint": ["local", "ghost"]}},
            "parameter_space",
            "'endpoint': no endpoint 'ghost'",
        ),
        (
            {"parameter_space": {"p": [{"endpoint": "local"}, {"endpoint": "ghost", "model": "m"}]}},
            "parameter_space",
            "'p' bundle 2: no endpoint 'ghost' in the project; its endpoints: local.",
        ),
        ({"scorers": [JUDGE]}, "scorers", "Scorer 1 (llm_judge): no endpoint 'ghost' in the project"),
    ],
)
def test_the_api_refuses_an_endpoint_name_the_project_lacks(api, elsewhere, fields, field, says):
    make_endpoint("local")
    response = create(api, **fields)
    assert response.status_code == 400, response.content
    assert says in response.json()[field][0]
    assert not Experiment.objects.exists()


def test_a_patch_naming_an_unknown_endpoint_is_refused_and_a_known_one_kept(api, elsewhere):
    experiment = make_experiment(make_endpoint("local"))
    url = f"/api/experiments/{experiment.pk}/"
    refused = api.patch(url, {"parameter_space": {"endpoint": ["ghost"]}}, format="json")
    assert refused.status_code == 400 and "no endpoint 'ghost'" in refused.json()["parameter_space"][0]
    make_endpoint("ghost")
    assert api.patch(url, {"parameter_space": {"endpoint": ["ghost"]}}, format="json").status_code == 200


def test_a_change_of_endpoint_with_an_unknown_name_in_the_space_is_a_400(api):
    experiment = make_experiment(make_endpoint("local"))
    other = make_endpoint("other")
    body = {"endpoint": other.pk, "scorers": [JUDGE]}
    response = api.patch(f"/api/experiments/{experiment.pk}/", body, format="json")
    assert response.status_code == 400 and "no endpoint 'ghost'" in response.json()["scorers"][0]


def test_a_sweep_over_a_space_naming_an_unknown_endpoint_is_refused(api):
    experiment = make_experiment(make_endpoint("local"))
    body = {"type": "grid", "parameter_space": {"endpoint": ["ghost"]}}
    response = api.post(f"/api/experiments/{experiment.pk}/sweep/", body, format="json")
    assert response.status_code == 400 and "no endpoint 'ghost'" in response.json()["parameter_space"][0]
    assert not Sweep.objects.exists()


def test_the_editor_refuses_an_endpoint_name_the_project_lacks(client, alice):
    client.force_login(alice)
    make_endpoint("local")
    data = {"name": "Capitals", "description": "", "endpoint": ""}
    data |= {"stages-TOTAL_FORMS": "1", "stages-INITIAL_FORMS": "0", "stages-0-ORDER": "1"}
    data |= {"stages-0-name": "answer", "stages-0-user": "Capital?"}
    data |= {"params-TOTAL_FORMS": "1", "params-INITIAL_FORMS": "0"}
    data |= {"params-0-key": "endpoint", "params-0-values": "local, ghost"}
    data |= {"scorers-TOTAL_FORMS": "0", "scorers-INITIAL_FORMS": "0"}
    response = client.post(reverse("ui:experiment_create"), data)
    assert response.status_code == 200 and not Experiment.objects.exists()
    assert "no endpoint &#x27;ghost&#x27; in the project" in response.content.decode()


def test_the_model_check_refuses_it_too():
    experiment = make_experiment(make_endpoint("local"))
    experiment.scorers = [JUDGE]
    with pytest.raises(ValidationError, match="Scorer 1 \\(llm_judge\\): no endpoint 'ghost'"):
        experiment.full_clean()


@pytest.mark.parametrize(
    ("lines", "line", "field"),
    [
        ("parameter_space:\n  p:\n    - {endpoint: local}\n    - {endpoint: ghost}\n", 6, "parameter_space"),
        (
            "scorers:\n  - {type: keyword, config: {required_present: [a]}}\n  - " + str(JUDGE) + "\n",
            5,
            "scorers",
        ),
    ],
)
def test_a_definition_naming_an_unknown_endpoint_is_refused_at_its_line(lines, line, field):
    make_endpoint("local")
    text = "name: x\npipeline: [{name: a, user: hi}]\n" + lines
    with pytest.raises(DefinitionError) as info:
        import_definition(load_definition(text, "exp.yaml"), team_project())
    assert (info.value.line, info.value.field) == (line, field)
    assert "no endpoint 'ghost' in the project; its endpoints: local." in str(info.value)
