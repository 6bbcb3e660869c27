"""A sweep's workers share every endpoint it uses, the stages' and the judges' too:
never more workers than the smallest limit among them, and together the workers
never call an endpoint more often at once than its max_concurrency."""

import pytest

from engine.concurrency import concurrency_shares
from engine.types import EndpointConfig
from runs.bridge import EndpointKeys
from runs.control import sweep_endpoints
from runs.sweeps import worker_count
from tests.factories import make_endpoint, make_experiment


def endpoint(name: str, limit: int) -> EndpointConfig:
    return EndpointConfig(name=name, base_url="http://127.0.0.1:9/v1", max_concurrency=limit)


def test_the_smallest_used_limit_caps_the_workers_and_each_gets_its_share():
    endpoints = {e.name: e for e in (endpoint("big", 16), endpoint("judge", 3), endpoint("open", 0))}
    shares = concurrency_shares(endpoints, {"big", "judge", "open"}, workers=4)
    assert shares.workers == 3
    limits = {name: e.max_concurrency for name, e in shares.endpoints.items()}
    assert limits == {"big": 5, "judge": 1, "open": 0}  # 0: no limit of its own, nothing to split


def test_an_endpoint_the_sweep_does_not_use_does_not_cap_it():
    endpoints = {e.name: e for e in (endpoint("big", 16), endpoint("tiny", 1))}
    shares = concurrency_shares(endpoints, {"big"}, workers=4)
    assert shares.workers == 4
    assert shares.endpoints["big"].max_concurrency == 4 and shares.endpoints["tiny"].max_concurrency == 1


@pytest.fixture
def experiment(db):
    make_endpoint("small", max_concurrency=2)
    make_endpoint("judge", max_concurrency=3)
    make_endpoint("unused", max_concurrency=1)
    return make_experiment(
        make_endpoint("default", max_concurrency=8),
        pipeline=[
            {"name": "draft", "user": "Answer {{ country }}"},
            {"name": "critique", "user": "Improve: {{ draft }}"},
        ],
        parameter_space={"temperature": [0.0, 0.7], "critique.endpoint": ["default", "small"]},
        scorers=[{"type": "llm_judge", "weight": 1, "config": {"endpoint": "judge"}}],
    )


def test_a_stage_on_another_endpoint_caps_the_workers(experiment, settings):
    settings.SWEEP_WORKERS = 4
    assert sweep_endpoints(experiment, experiment.parameter_space) == {"default", "small", "judge"}
    assert worker_count(experiment, experiment.parameter_space) == 2


def test_a_judge_on_another_endpoint_caps_the_workers(experiment, settings):
    settings.SWEEP_WORKERS = 4
    space = {"temperature": [0.0, 0.7]}  # the stages all on the default endpoint
    assert sweep_endpoints(experiment, space) == {"default", "judge"}
    assert worker_count(experiment, space) == 3


def test_a_linked_bundle_naming_an_endpoint_counts(experiment, settings):
    settings.SWEEP_WORKERS = 4
    space = {"provider": [{"endpoint": "small", "model": "m"}, {"endpoint": "default", "model": "n"}]}
    assert "small" in sweep_endpoints(experiment, space)
    assert worker_count(experiment, space) == 2


def test_together_the_workers_stay_within_every_used_limit(experiment, settings):
    settings.SWEEP_WORKERS = 4
    workers = worker_count(experiment, experiment.parameter_space)
    plain = EndpointKeys(experiment.project_id, workers).plain
    for name, limit in {"default": 8, "small": 2, "judge": 3}.items():
        assert 1 <= plain[name].max_concurrency and plain[name].max_concurrency * workers <= limit
