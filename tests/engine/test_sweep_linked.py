"""Linked parameters: bundles that vary together, crossed with the other dimensions."""

import pytest

from engine.runner import plan_stages
from engine.sweep import SweepError, build_sweep, config_key, parse_space
from engine.types import EndpointConfig, Stage

PROVIDERS = [
    {"endpoint": "vllm", "model": "llama3", "temperature": 0.2},
    {"endpoint": "openai", "model": "gpt-4o-mini", "temperature": 0.7},
]


def test_a_grid_crosses_each_bundle_with_the_other_lists_and_keeps_bundles_whole():
    configs = build_sweep("grid", {"provider": PROVIDERS, "top_p": [0.5, 1.0]}).initial_configs()
    assert len(configs) == 4
    for config in configs:
        bundle = {k: config[k] for k in ("endpoint", "model", "temperature")}
        assert bundle in PROVIDERS
    assert {(c["model"], c["top_p"]) for c in configs} == {
        ("llama3", 0.5),
        ("llama3", 1.0),
        ("gpt-4o-mini", 0.5),
        ("gpt-4o-mini", 1.0),
    }


def test_configurations_are_flat_so_the_cache_key_sees_the_bundles_parameters():
    config = build_sweep("grid", {"provider": PROVIDERS[:1]}).initial_configs()[0]
    assert "provider" not in config
    assert config_key(config) == config_key({"endpoint": "vllm", "model": "llama3", "temperature": 0.2})


def test_a_bundle_reaches_the_stage_as_plain_parameters():
    config = build_sweep("grid", {"provider": PROVIDERS[:1]}).initial_configs()[0]
    endpoints = {"vllm": EndpointConfig(name="vllm", base_url="http://x/v1", default_model="m")}
    default = EndpointConfig(name="default", base_url="http://y/v1", default_model="m")
    plan = plan_stages([Stage(name="a", user="hi")], config, default, endpoints)[0]
    assert (plan.endpoint.name, plan.model, plan.params) == ("vllm", "llama3", {"temperature": 0.2})


def test_random_and_guided_sweeps_draw_whole_bundles():
    space = {"provider": PROVIDERS, "top_p": [0.1, 0.5, 0.9]}
    guided = build_sweep("guided", space, n_samples=6, seed=3)
    first = guided.initial_configs()
    later = guided.next_round([(c, 0.5) for c in first], 2)
    for config in first + later:
        assert {k: config[k] for k in ("endpoint", "model", "temperature")} in PROVIDERS
    assert len({config_key(c) for c in first + later}) == len(first + later)
    assert build_sweep("random", space, n_samples=6).size() == 6


def test_a_parameter_set_by_a_bundle_and_by_a_list_is_refused():
    with pytest.raises(SweepError, match="'temperature' is set both by 'temperature' and by the bundles"):
        parse_space({"temperature": [0.1], "provider": PROVIDERS})


def test_an_empty_bundle_is_refused():
    with pytest.raises(SweepError, match="bundle 2 is empty"):
        parse_space({"provider": [{"model": "a"}, {}]})


def test_a_list_of_objects_for_an_object_valued_parameter_stays_a_list_of_values():
    formats = [{"type": "json_object"}, {"type": "text"}]
    configs = build_sweep("grid", {"response_format": formats}).initial_configs()
    assert configs == [{"response_format": formats[0]}, {"response_format": formats[1]}]


def test_a_racing_sweep_races_whole_bundles():
    configs = build_sweep("racing", {"provider": PROVIDERS, "top_p": [0.5, 1.0]}).initial_configs()
    assert len(configs) == 4
    assert all({k: c[k] for k in ("endpoint", "model", "temperature")} in PROVIDERS for c in configs)


def test_an_object_valued_parameter_is_a_value_not_a_linked_bundle():
    configs = build_sweep("grid", {"metadata": [{"run": "a"}, {"run": "b"}]}).initial_configs()
    assert configs == [{"metadata": {"run": "a"}}, {"metadata": {"run": "b"}}]
