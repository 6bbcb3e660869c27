"""LLM parameters are checked before anything runs: every way they enter the API is a
400 that names the field, the parameter and the reason."""

import pytest

from experiments.models import Experiment
from runs.models import Sweep
from tests.api.helpers import KEYWORD, STUB_DATASET, STUB_PIPELINE
from tests.engine.test_params import INVALID, VALID
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


def body(**fields):
    return {
        "name": "Capitals",
        "pipeline": STUB_PIPELINE,
        "dataset": STUB_DATASET,
        "parameter_space": {"temperature": [0.0, 0.7]},
        "scorers": [KEYWORD],
        **fields,
    }


def with_params(params: dict) -> list[dict]:
    return [{**STUB_PIPELINE[0], "params": params}, *STUB_PIPELINE[1:]]


def create(api, **fields):
    return api.post("/api/experiments/", body(**fields), format="json")


@pytest.mark.parametrize("name,value", VALID, ids=[f"{n}={v!r}" for n, v in VALID])
def test_a_valid_value_is_accepted_in_the_space_and_in_a_stage(api, name, value):
    assert create(api, parameter_space={name: [value]}).status_code == 201
    assert create(api, name="staged", pipeline=with_params({name: value})).status_code == 201


# In the space, `user` is the user template (stage params may set OpenAI's `user`).
IN_SPACE = [case for case in INVALID if case[0] != "user"]


@pytest.mark.parametrize("name,value,reason", IN_SPACE, ids=[f"{n}={v!r}" for n, v, _ in IN_SPACE])
def test_an_invalid_value_in_the_space_is_a_400_on_parameter_space(api, name, value, reason):
    response = create(api, parameter_space={name: [0.5, value] if name == "temperature" else [value]})
    assert response.status_code == 400
    message = response.json()["parameter_space"][0]
    assert message.startswith(f"'{name}' ") and reason in message
    assert not Experiment.objects.exists()


@pytest.mark.parametrize("name,value,reason", INVALID, ids=[f"{n}={v!r}" for n, v, _ in INVALID])
def test_an_invalid_value_in_a_stage_is_a_400_on_pipeline(api, name, value, reason):
    response = create(api, pipeline=with_params({name: value}))
    assert response.status_code == 400
    message = response.json()["pipeline"][0]
    stage = STUB_PIPELINE[0]["name"]
    assert message.startswith(f"Stage '{stage}' params: '{name}' ") and reason in message


BAD_SPACES = [
    ({"temperature": {"min": 0, "max": 2.5}}, "'temperature' range max 2.5"),
    ({"top_p": {"min": -0.1, "max": 1}}, "'top_p' range min -0.1"),
    ({"max_tokens": {"min": 16, "max": 256}}, '"type": "int"'),
    ({"max_tokens": {"min": 0, "max": 256, "type": "int"}}, "above 0"),
    ({"stop": {"min": 0, "max": 1}}, "not a range"),
    ({"temprature": [0.5]}, "unknown parameter 'temprature' — did you mean temperature?"),
    ({"answer.temprature": [0.5]}, "'answer.temprature': unknown parameter 'temprature'"),
    ({"answer.top_p": [2]}, "'answer.top_p': 'top_p' must be a number from 0 to 1"),
    ({"n": [1, 2]}, "n > 1 is refused, samples are the sweep's `repeats`"),
    ({"provider": [{"model": "a", "temperature": 3}]}, "'provider' bundle 1: 'temperature' must be"),
    (
        {"provider": [{"model": "a"}, {"model": "b", "top_k": 5}]},
        "'provider' bundle 2: unknown parameter 'top_k'",
    ),
]


@pytest.mark.parametrize("space,reason", BAD_SPACES, ids=[str(s) for s, _ in BAD_SPACES])
def test_a_list_range_or_bundle_outside_the_rules_is_a_400_on_parameter_space(api, space, reason):
    response = create(api, parameter_space=space)
    assert response.status_code == 400
    assert reason in response.json()["parameter_space"][0]


def test_the_runners_own_keys_are_not_llm_parameters(api):
    space = {"model": ["a", "b"], "answer.model": ["c"], "answer.user": ["Capital of {{ country }}?"]}
    assert create(api, parameter_space=space).status_code == 201


def test_a_stage_param_typo_says_the_closest_name(api):
    response = create(api, pipeline=with_params({"max_token": 64}))
    assert "unknown parameter 'max_token' — did you mean max_tokens?" in response.json()["pipeline"][0]


def test_a_server_parameter_needs_an_endpoint_that_lists_it(api):
    plain = make_endpoint("openai")
    vllm = make_endpoint("vllm", extra_params=["top_k", "my_knob"])
    space = {"top_k": [20, 40], "my_knob": ["fast", 3]}  # a name of no rule of ours takes any value
    refused = create(api, endpoint=plain.pk, parameter_space=space)
    assert refused.status_code == 400
    assert "'top_k'" in refused.json()["parameter_space"][0]
    assert "extra parameters" in refused.json()["parameter_space"][0]
    assert create(api, endpoint=vllm.pk, parameter_space=space).status_code == 201
    assert create(api, name="b", endpoint=vllm.pk, parameter_space={"top_k": [-2]}).status_code == 400


def test_an_endpoint_the_space_names_lends_its_extras(api):
    plain = make_endpoint("openai")
    make_endpoint("vllm", extra_params=["min_p"])
    space = {
        "provider": [{"endpoint": "openai", "model": "a"}, {"endpoint": "vllm", "model": "b", "min_p": 0.1}]
    }
    assert create(api, endpoint=plain.pk, parameter_space=space).status_code == 201


def test_moving_an_experiment_to_an_endpoint_without_its_extra_is_refused_on_endpoint(api):
    vllm = make_endpoint("vllm", extra_params=["top_k"])
    plain = make_endpoint("openai")
    experiment = make_experiment(vllm, parameter_space={"top_k": [20, 40]})
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"endpoint": plain.pk}, format="json")
    assert response.status_code == 400
    message = response.json()["endpoint"][0]
    assert message.startswith("Endpoint 'openai' does not take a parameter") and "'top_k'" in message
    experiment.refresh_from_db()
    assert experiment.endpoint == vllm


def test_endpoints_take_a_list_of_extra_parameter_names(api, alice):
    url = "/api/endpoints/"
    base = {"name": "vllm", "base_url": "http://127.0.0.1:8000/v1", "project": make_endpoint().project_id}
    created = api.post(url, {**base, "extra_params": ["top_k", "min_p", "top_k"]}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["extra_params"] == ["top_k", "min_p"]
    for names, reason in [(["temperature"], "OpenAI parameter"), (["top k"], "not a parameter name")]:
        response = api.post(url, {**base, "name": "x", "extra_params": names}, format="json")
        assert response.status_code == 400 and reason in response.json()["extra_params"][0]


# -- sweep launch ---------------------------------------------------------------------


def launch(api, experiment, **fields):
    return api.post(f"/api/experiments/{experiment.pk}/sweep/", {"dry_run": True, **fields}, format="json")


def test_a_sweeps_own_space_is_checked_like_the_experiments(api):
    experiment = make_experiment(make_endpoint())
    assert launch(api, experiment, parameter_space={"temperature": [0.2, 0.4]}).status_code == 200
    for space, reason in [
        ({"temperature": [0.2, 4]}, "from 0 to 2"),
        ({"temprature": [0.2]}, "did you mean temperature?"),
        ({"n": [3]}, "n > 1 is refused"),
        ({"top_k": [5]}, "unknown parameter 'top_k'"),
        ({"max_tokens": {"min": 1, "max": 9}}, '"type": "int"'),
    ]:
        response = launch(api, experiment, type="random", n_samples=2, parameter_space=space)
        assert response.status_code == 400 and reason in response.json()["parameter_space"][0], space
    assert not Sweep.objects.exists()


def test_a_launch_refuses_an_extra_the_endpoint_stopped_listing(api):
    vllm = make_endpoint("vllm", extra_params=["top_k"])
    experiment = make_experiment(vllm, parameter_space={"top_k": [20, 40]})
    assert launch(api, experiment).status_code == 200
    vllm.extra_params = []
    vllm.save()
    response = launch(api, experiment)
    assert response.status_code == 400
    assert "stage 'answer' calls endpoint 'vllm'" in response.json()["parameter_space"][0]


def test_a_launch_checks_the_endpoint_each_configuration_sends_a_stage_to(api):
    plain = make_endpoint("openai")
    make_endpoint("vllm", extra_params=["top_k"])
    space = {"endpoint": ["openai", "vllm"], "top_k": [20]}  # top_k would go to openai too
    experiment = make_experiment(plain, parameter_space=space)  # each name is listed by some endpoint
    response = launch(api, experiment)
    assert response.status_code == 400
    assert "calls endpoint 'openai'" in response.json()["parameter_space"][0]
