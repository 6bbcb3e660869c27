"""Sweeps pick configurations (grid, random, guided, racing), order them by model and estimate their cost."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import pytest

from engine.sweep import (
    SWEEPS,
    GridSweep,
    GuidedSweep,
    RacingSweep,
    RandomSweep,
    Sweep,
    SweepError,
    SweepTooLarge,
    build_sweep,
    check_size,
    config_key,
    estimate,
    models_of,
    order_by_model,
    round_significant,
)
from engine.types import Item, ScorerSpec, Stage

Config = dict

# ~200 configurations; the objective peaks at temperature 0.3, top_p 0.9, prompt B.
PEAKED_SPACE = {
    "temperature": [round(0.1 * i, 1) for i in range(10)],
    "top_p": [0.6, 0.7, 0.8, 0.9, 1.0],
    "draft.user": ["A", "B", "C", "D"],
}
PEAK = {"temperature": 0.3, "top_p": 0.9, "draft.user": "B"}


def peaked(config: Config) -> float:
    penalty = 0.0 if config["draft.user"] == "B" else 0.3
    return 1 - abs(config["temperature"] - 0.3) - abs(config["top_p"] - 0.9) - penalty


def simulate(
    sweep: Sweep, objective: Callable[[Config], float | None], budget: int
) -> list[tuple[Config, float | None]]:
    """Run a sweep the way the worker does: evaluate each round, feed the results back."""
    results: list[tuple[Config, float | None]] = []
    batch = sweep.initial_configs()
    while batch:
        results += [(config, objective(config)) for config in batch]
        batch = sweep.next_round(results, budget - len(results))
    return results


def keys(configs: list[Config]) -> list[str]:
    return [config_key(c) for c in configs]


# -- the registry ---------------------------------------------------------------------


def test_the_four_sweep_types_are_registered_by_name() -> None:
    assert set(SWEEPS) == {"grid", "random", "guided", "racing"}
    assert isinstance(build_sweep("grid", {"a": [1]}), GridSweep)
    assert isinstance(build_sweep("guided", {"a": [1, 2]}, n_samples=4, seed=1, top_k=2), GuidedSweep)


def test_an_unknown_sweep_type_lists_the_known_ones() -> None:
    with pytest.raises(
        SweepError, match="Unknown sweep type 'bayes'; known types: grid, guided, racing, random"
    ):
        build_sweep("bayes", {"a": [1]})


def test_an_option_the_sweep_lacks_is_refused_by_name() -> None:
    with pytest.raises(SweepError, match="no option top_kk; its options: top_k, initial"):
        build_sweep("guided", {"a": [1]}, n_samples=3, top_kk=2)
    with pytest.raises(SweepError, match="its options: none"):
        build_sweep("random", {"a": [1]}, n_samples=3, top_k=2)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ([1, 2], "must be an object"),
        ({"": [1]}, "non-empty text"),
        ({"a": []}, "'a' has an empty list"),
        ({"a": 0.5}, "'a' must be a list of values or a range"),
        ({"a": {"min": 0, "max": 1, "step": 0.1}}, r"unknown keys \['step'\]"),
        ({"a": {"min": "0", "max": 1}}, "numeric min and max"),
        ({"a": {"min": 2, "max": 1}}, "min greater than max"),
        ({"a": {"min": 0, "max": 1, "type": "str"}}, "type must be int or float"),
        ({"a": {"min": 0, "max": 1, "log": True}}, "log range needs min > 0"),
        ({"a": {"min": 0.2, "max": 0.8, "type": "int"}}, "holds no whole number"),
    ],
)
def test_a_broken_parameter_space_says_what_is_wrong(space: object, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        RandomSweep(space, n_samples=3)  # type: ignore[arg-type]


# -- grid -----------------------------------------------------------------------------------


def test_a_grid_of_3_by_2_by_2_yields_twelve_distinct_configs_in_order() -> None:
    sweep = GridSweep({"temperature": [0.0, 0.5, 1.0], "top_p": [0.9, 1.0], "model": ["a", "b"]})
    configs = sweep.initial_configs()
    assert sweep.size() == 12
    assert len(set(keys(configs))) == 12
    assert configs[0] == {"temperature": 0.0, "top_p": 0.9, "model": "a"}
    assert configs[1] == {"temperature": 0.0, "top_p": 0.9, "model": "b"}  # the last key varies fastest
    assert configs == GridSweep(sweep.space).initial_configs()
    assert sweep.next_round([(c, 1.0) for c in configs], 10) == []


def test_a_value_listed_twice_is_run_once() -> None:
    assert GridSweep({"temperature": [0.7, 0.70, 1, 1.0], "stop": [["\n"], ["\n"]]}).size() == 2


def test_an_empty_space_is_one_run_with_the_stage_defaults() -> None:
    assert GridSweep({}).initial_configs() == [{}]


def test_a_huge_grid_is_sized_without_listing_it_and_refused() -> None:
    sweep = GridSweep({f"p{i}": list(range(10)) for i in range(10)})
    started = time.perf_counter()
    assert sweep.size() == 10**10
    with pytest.raises(SweepTooLarge, match=r"10,000,000,000 configurations; the limit is 10,000"):
        sweep.check_size(10_000)
    assert time.perf_counter() - started < 0.1


def test_the_size_limit_message_names_the_size_the_limit_and_the_setting() -> None:
    with pytest.raises(SweepTooLarge) as info:
        check_size(12_000, 10_000)
    assert str(info.value).startswith(
        "This sweep has 12,000 configurations; the limit is 10,000 (MAX_SWEEP_RUNS)."
    )
    assert info.value.permanent
    check_size(10_000, 10_000)


def test_a_grid_refuses_a_range_and_says_what_to_do_instead() -> None:
    with pytest.raises(SweepError, match="grid needs lists of values.*use a random or guided sweep"):
        build_sweep("grid", {"temperature": {"min": 0, "max": 1}})


# -- random ---------------------------------------------------------------------------------


def test_random_samples_stay_inside_ranges_and_lists() -> None:
    space = {
        "max_tokens": {"min": 1, "max": 3, "type": "int"},
        "temperature": {"min": 0.1, "max": 0.9},
        "model": ["a", "b"],
    }
    configs = RandomSweep(space, n_samples=60, seed=3).initial_configs()
    assert len(configs) == 60
    assert {c["max_tokens"] for c in configs} == {1, 2, 3}  # ints are inclusive
    assert all(isinstance(c["max_tokens"], int) for c in configs)
    assert all(0.1 <= c["temperature"] <= 0.9 for c in configs)
    assert all(c["temperature"] == round_significant(c["temperature"]) for c in configs)
    assert {c["model"] for c in configs} == {"a", "b"}


def test_a_log_range_samples_every_decade_alike() -> None:
    configs = RandomSweep(
        {"lr": {"min": 1e-4, "max": 1.0, "log": True}}, n_samples=400, seed=1
    ).initial_configs()
    decades = [sum(10 ** (-d - 1) <= c["lr"] < 10**-d for c in configs) for d in range(4)]
    assert all(60 <= n <= 140 for n in decades), decades


def test_an_int_log_range_gives_whole_numbers_inside_it() -> None:
    configs = RandomSweep(
        {"k": {"min": 1, "max": 1000, "log": True, "type": "int"}}, n_samples=50
    ).initial_configs()
    assert all(isinstance(c["k"], int) and 1 <= c["k"] <= 1000 for c in configs)
    assert sum(c["k"] < 32 for c in configs) > 10  # log-uniform: half the draws below sqrt(1000)


def test_the_same_seed_gives_the_same_configs_and_another_seed_others() -> None:
    space = {"temperature": {"min": 0.0, "max": 2.0}, "top_p": [0.8, 0.9, 1.0]}
    first = RandomSweep(space, n_samples=20, seed=7).initial_configs()
    assert first == build_sweep("random", space, n_samples=20, seed=7).initial_configs()
    assert first != RandomSweep(space, n_samples=20, seed=8).initial_configs()
    assert (
        RandomSweep(space, n_samples=5).initial_configs()
        == RandomSweep(space, n_samples=5, seed=0).initial_configs()
    )


def test_random_never_repeats_a_config() -> None:
    configs = RandomSweep({"a": [1, 2, 3, 4], "b": [1, 2, 3, 4]}, n_samples=12, seed=2).initial_configs()
    assert len(configs) == 12
    assert len(set(keys(configs))) == 12


def test_a_space_smaller_than_n_samples_gives_each_config_once() -> None:
    sweep = RandomSweep({"a": [1, 2, 3], "b": ["x", "y"]}, n_samples=100, seed=1)
    started = time.perf_counter()
    configs = sweep.initial_configs()
    assert sweep.size() == 6
    assert len(configs) == 6 and len(set(keys(configs))) == 6
    assert time.perf_counter() - started < 0.5


def test_a_small_int_range_is_used_up_without_repeats() -> None:
    space = {"k": {"min": 1, "max": 3, "type": "int"}, "t": {"min": 0.5, "max": 0.5}}
    configs = RandomSweep(space, n_samples=10, seed=1).initial_configs()
    assert sorted(c["k"] for c in configs) == [1, 2, 3]
    assert {c["t"] for c in configs} == {0.5}


def test_a_float_range_that_rounds_to_few_values_does_not_hang() -> None:
    space = {"temperature": {"min": 0.5, "max": 0.5001}, "top_p": {"min": 0.9, "max": 0.9}}
    configs = RandomSweep(space, n_samples=1000, seed=1).initial_configs()
    assert 1 < len(configs) < 1000
    assert {c["top_p"] for c in configs} == {0.9}


def test_a_large_int_range_is_sampled_without_listing_it() -> None:
    space = {"seed": {"min": 0, "max": 10**12, "type": "int"}}
    assert RandomSweep(space, n_samples=5).size() == 5
    assert len(RandomSweep(space, n_samples=5).initial_configs()) == 5


@pytest.mark.parametrize("n_samples", [None, 0, -3, "10", 2.5, True])
def test_random_and_guided_sweeps_need_n_samples(n_samples: object) -> None:
    for kind in ("random", "guided"):
        with pytest.raises(SweepError, match=f"A {kind} sweep needs n_samples"):
            build_sweep(kind, {"a": [1, 2]}, n_samples=n_samples)  # type: ignore[arg-type]


# -- guided ---------------------------------------------------------------------------------


def test_a_guided_sweep_finds_the_peak_within_forty_evaluations() -> None:
    found = 0
    for seed in range(10):
        results = simulate(GuidedSweep(PEAKED_SPACE, n_samples=40, seed=seed), peaked, budget=40)
        assert len(results) == 40
        found += PEAK in [config for config, _ in results]
    assert found >= 9  # 40 random configs of 200 hold it 1 time in 5


def test_a_guided_sweep_beats_random_sampling_of_the_same_budget() -> None:
    guided, chance = [], []
    for seed in range(10):
        guided.append(
            max(s for _, s in simulate(GuidedSweep(PEAKED_SPACE, n_samples=40, seed=seed), peaked, 40))
        )
        chance.append(max(map(peaked, RandomSweep(PEAKED_SPACE, n_samples=40, seed=seed).initial_configs())))
    assert statistics.fmean(guided) > statistics.fmean(chance) + 0.05
    assert sum(s == 1 for s in guided) > sum(s == 1 for s in chance)


def test_a_guided_sweep_never_proposes_a_config_twice() -> None:
    results = simulate(GuidedSweep(PEAKED_SPACE, n_samples=150, seed=4, round_size=7), peaked, budget=150)
    assert len(results) == 150
    assert len(set(keys([c for c, _ in results]))) == 150


def test_a_guided_sweep_stops_when_the_space_is_used_up() -> None:
    sweep = GuidedSweep({"a": [1, 2, 3], "b": ["x", "y"]}, n_samples=20, seed=1)
    results = simulate(sweep, lambda c: c["a"] / 3, budget=20)
    assert len(results) == 6
    assert sweep.next_round(results, 14) == []


def test_a_guided_sweep_proposes_nothing_when_no_budget_remains() -> None:
    sweep = GuidedSweep(PEAKED_SPACE, n_samples=10, seed=1)
    results = [(c, peaked(c)) for c in sweep.initial_configs()]
    assert sweep.next_round(results, 0) == []
    assert len(sweep.next_round(results, 3)) == 3


def test_a_round_depends_only_on_the_seed_and_the_results() -> None:
    first = GuidedSweep(PEAKED_SPACE, n_samples=40, seed=9)
    results = [(c, peaked(c)) for c in first.initial_configs()]
    resumed = GuidedSweep(PEAKED_SPACE, n_samples=40, seed=9)  # e.g. after a worker restart
    assert first.next_round(results, 30) == resumed.next_round(results, 30)


def test_a_guided_round_is_mostly_neighbours_of_the_best() -> None:
    sweep = GuidedSweep(PEAKED_SPACE, n_samples=40, seed=2, round_size=10, top_k=1, exploit_ratio=0.8)
    best = {"temperature": 0.5, "top_p": 0.7, "draft.user": "C"}
    proposals = sweep.next_round(
        [(best, 0.9), ({"temperature": 0.0, "top_p": 1.0, "draft.user": "A"}, 0.1)], 10
    )
    changed = [sum(p[k] != best[k] for k in best) for p in proposals]
    assert len(proposals) == 10
    assert sum(1 <= n <= 2 for n in changed) >= 8
    near = [p for p, n in zip(proposals, changed, strict=True) if n == 1 and p["draft.user"] == "C"]
    assert all(abs(p["temperature"] - 0.5) + abs(p["top_p"] - 0.7) < 0.11 for p in near)  # one step


def test_failed_runs_count_as_tried_but_not_as_good() -> None:
    sweep = GuidedSweep({"a": [1, 2, 3, 4]}, n_samples=4, seed=1, initial=2)
    tried = [({"a": 1}, None), ({"a": 2}, None)]
    assert sorted(c["a"] for c in sweep.next_round(tried, 2)) == [3, 4]


def test_a_guided_sweep_searches_ranges_within_their_bounds() -> None:
    space = {
        "temperature": {"min": 0.0, "max": 2.0},
        "top_k": {"min": 1, "max": 100, "type": "int"},
        "lr": {"min": 1e-5, "max": 1e-1, "log": True},
        "fixed": {"min": 3, "max": 3, "type": "int"},
    }

    def near_one(config: Config) -> float:
        return (
            -abs(config["temperature"] - 1.0)
            - abs(config["top_k"] - 50) / 100
            - abs(math.log10(config["lr"]) + 3)
        )

    results = simulate(GuidedSweep(space, n_samples=60, seed=5), near_one, budget=60)
    configs = [c for c, _ in results]
    assert len(configs) == 60 and len(set(keys(configs))) == 60
    assert all(
        0 <= c["temperature"] <= 2 and 1 <= c["top_k"] <= 100 and 1e-5 <= c["lr"] <= 0.1 for c in configs
    )
    assert all(c["fixed"] == 3 for c in configs)
    assert max(s for _, s in results) > max(s for _, s in results[:15])  # the rounds improved on the start


@pytest.mark.parametrize(
    ("space", "outside", "inside"),
    [
        ({"a": [1, 2]}, 7, (1, 2)),
        ({"t": {"min": 0.1, "max": 1.0, "log": True}}, -1.0, None),
        ({"t": {"min": 0.1, "max": 1.0}}, "warm", None),
    ],
)
def test_a_neighbour_of_a_value_from_outside_the_space_is_drawn_afresh(
    space: dict, outside: object, inside: tuple | None
) -> None:
    (key,) = space
    sweep = GuidedSweep(space, n_samples=6, seed=1, exploit_ratio=1.0)
    proposals = sweep.next_round([({key: outside}, 1.0)], 2)
    assert len(proposals) == 2
    for config in proposals:
        assert config[key] in inside if inside else 0.1 <= config[key] <= 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_k": 0}, "top_k must be a whole number"),
        ({"round_size": 2.5}, "round_size must be a whole number"),
        ({"initial": True}, "initial must be a whole number"),
        ({"exploit_ratio": 1.5}, "exploit_ratio must be between 0 and 1"),
    ],
)
def test_guided_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        build_sweep("guided", {"a": [1, 2]}, n_samples=5, **options)


def test_a_guided_sweep_plans_n_samples_runs_or_the_whole_space_if_smaller() -> None:
    assert GuidedSweep(PEAKED_SPACE, n_samples=40).size() == 40
    assert GuidedSweep({"a": [1, 2]}, n_samples=40).size() == 2
    assert GuidedSweep({"t": {"min": 0.0, "max": 1.0}}, n_samples=40).size() == 40
    assert len(GuidedSweep(PEAKED_SPACE, n_samples=40).initial_configs()) == 10
    assert len(GuidedSweep(PEAKED_SPACE, n_samples=40, initial=3).initial_configs()) == 3


# -- keys and order --------------------------------------------------------------------------


def test_a_config_key_ignores_key_order_and_float_spelling() -> None:
    key = config_key({"temperature": 1.0, "top_p": 0.70, "model": "m"})
    assert key == config_key({"model": "m", "top_p": 0.7, "temperature": 1})
    assert key != config_key({"model": "m", "top_p": 0.7, "temperature": 0.9})
    assert len(key) == 64 and int(key, 16) >= 0


def test_round_significant_keeps_four_digits() -> None:
    assert round_significant(0.123456) == 0.1235
    assert round_significant(1234.5678) == 1235.0
    assert round_significant(0.000123456) == 0.0001235
    assert round_significant(0.0) == 0.0


def test_configs_of_one_model_are_run_together_in_their_first_order() -> None:
    configs = [
        {"model": "b", "t": 1},
        {"t": 2},
        {"model": "b", "t": 3},
        {"model": "a", "t": 4},
        {"t": 5},
    ]
    ordered = order_by_model(configs, default_model="a")
    assert [c["t"] for c in ordered] == [1, 3, 2, 4, 5]


def test_stage_level_models_count_as_models_the_config_uses() -> None:
    configs = [
        {"draft.model": "x", "t": 1},
        {"draft.model": "y", "t": 2},
        {"draft.model": "x", "t": 3},
    ]
    assert [c["t"] for c in order_by_model(configs, "d")] == [1, 3, 2]
    assert models_of({"model": "m", "review.model": "r", "draft.model": "x"}, "d") == ("m", "x", "r")


# -- estimate -------------------------------------------------------------------------------


def make_stages() -> list[Stage]:
    return [
        Stage(name="draft", user="Q: {{ q }}"),  # "Q: abcd" = 7 chars = 2 tokens
        Stage(name="polish", user="Fix: {{ previous }}"),  # "Fix: " = 2 tokens + draft's max_tokens
    ]


def make_items(n: int = 1) -> list[Item]:
    return [Item(id=i, input={"q": "abcd"}, reference="x") for i in range(n)]


def test_the_estimate_bounds_tokens_by_prompts_and_max_tokens() -> None:
    result = estimate([{"max_tokens": 100}], make_stages(), make_items())
    assert result == {"runs": 1, "calls": 2, "judge_calls": 0, "prompt_tokens": 104, "max_tokens": 304}


def test_stage_level_max_tokens_and_the_default_apply_per_stage() -> None:
    result = estimate([{"draft.max_tokens": 50}], make_stages(), make_items(), default_max_tokens=512)
    assert result["prompt_tokens"] == 2 + 2 + 50
    assert result["max_tokens"] == 54 + 50 + 512


def test_the_estimate_counts_runs_items_repeats_and_judge_calls() -> None:
    judge = ScorerSpec(type="llm_judge", config={"max_tokens": 10})
    configs = [{"temperature": 0.1}, {"temperature": 0.9}]
    result = estimate(
        configs, make_stages(), make_items(3), repeats=2, scorers=[judge, ScorerSpec("exact_match")]
    )
    assert result["runs"] == 2
    assert result["judge_calls"] == 2 * 3 * 2
    assert result["calls"] == 2 * (2 + 1) * 3 * 2
    without_judge = estimate(configs, make_stages(), make_items(3), repeats=2)
    judge_prompt = result["prompt_tokens"] - without_judge["prompt_tokens"]
    assert judge_prompt > 12 * 512  # the rendered prompt, plus the answer it shows at max_tokens
    assert result["max_tokens"] == without_judge["max_tokens"] + judge_prompt + 12 * 10


def test_a_sampled_judge_counts_each_of_its_samples() -> None:
    once = ScorerSpec(type="llm_judge", config={"max_tokens": 10})
    thrice = ScorerSpec(type="llm_judge", config={"max_tokens": 10, "samples": 3})
    configs = [{"temperature": 0.1}]
    plain = estimate(configs, make_stages(), make_items(3))
    single = estimate(configs, make_stages(), make_items(3), scorers=[once])
    sampled = estimate(configs, make_stages(), make_items(3), scorers=[thrice])
    assert (single["judge_calls"], sampled["judge_calls"]) == (3, 9)
    assert sampled["calls"] == plain["calls"] + 9
    judge_cost = single["max_tokens"] - plain["max_tokens"]
    assert sampled["max_tokens"] == plain["max_tokens"] + 3 * judge_cost


def test_a_prompt_variant_in_the_config_changes_the_estimate() -> None:
    short = estimate([{"draft.user": "{{ q }}"}], make_stages(), make_items())
    long = estimate(
        [{"draft.user": "Please answer carefully: {{ q }}", "endpoint": "other"}], make_stages(), make_items()
    )
    assert long["prompt_tokens"] > short["prompt_tokens"]


def test_earlier_outputs_named_through_stages_count_at_their_max_tokens() -> None:
    stages = [
        *make_stages(),
        Stage(name="judge", system="Be strict.", user="{{ stages.draft }} vs {{ stages.polish }}"),
    ]
    result = estimate([{"max_tokens": 10}], stages, make_items())
    assert result["prompt_tokens"] == 2 + (2 + 10) + (3 + 1 + 20)  # "Be strict.", " vs "


def test_a_template_that_cannot_render_is_counted_as_written() -> None:
    result = estimate(
        [{}], [Stage(name="s", user="{{ missing_column }}")], make_items(), default_max_tokens=1
    )
    assert result["prompt_tokens"] == math.ceil(len("{{ missing_column }}") / 4)


def test_estimating_ten_thousand_configs_over_thirty_items_is_fast() -> None:
    configs = GridSweep(
        {"temperature": [i / 100 for i in range(100)], "top_p": [i / 100 for i in range(100)]}
    )
    judge = ScorerSpec(type="llm_judge")
    started = time.perf_counter()
    result = estimate(configs.initial_configs(), make_stages(), make_items(30), scorers=[judge])
    assert result["runs"] == 10_000 and result["calls"] == 10_000 * 3 * 30
    assert time.perf_counter() - started < 2.0


# -- racing ---------------------------------------------------------------------------


def test_a_race_over_lists_has_every_configuration_as_a_candidate() -> None:
    space = {"a": [1, 2, 3], "b": ["x", "y"]}
    race = build_sweep("racing", space)
    assert isinstance(race, RacingSweep)
    assert race.size() == 6 and race.initial_configs() == build_sweep("grid", space).initial_configs()


def test_a_race_over_ranges_draws_n_samples_candidates() -> None:
    space = {"temperature": {"min": 0, "max": 1}, "b": [1, 2]}
    race = build_sweep("racing", space, n_samples=5, seed=4)
    assert race.size() == 5
    assert race.initial_configs() == build_sweep("random", space, n_samples=5, seed=4).initial_configs()


def test_a_race_over_ranges_without_n_samples_is_refused_at_n_samples() -> None:
    with pytest.raises(SweepError, match="n_samples") as info:
        build_sweep("racing", {"temperature": {"min": 0, "max": 1}})
    assert info.value.field == "n_samples"


def test_racing_options_shape_the_schedule_and_bad_ones_are_refused() -> None:
    race = build_sweep("racing", {"a": [1, 2]}, min_items=5, eta=3, confidence=0.99)
    assert race.schedule(100) == [5, 15, 45, 100]
    assert build_sweep("racing", {"a": [1, 2]}).schedule(200) == [20, 40, 80, 160, 200]
    with pytest.raises(SweepError, match="eta") as info:
        build_sweep("racing", {"a": [1, 2]}, eta=1)
    assert info.value.field == "options"
    with pytest.raises(SweepError, match="its options: min_items, eta, confidence"):
        build_sweep("racing", {"a": [1, 2]}, top_k=2)
