"""The racing rule on hand-built score tables: who leads, who is dropped, and
how the correction for many rounds and candidates keeps the true best."""

import random

import pytest

from engine import racing

ROWS = [f"row{i}" for i in range(20)]


def table(*columns: list[float], rows: list[str] = ROWS) -> dict[str, dict[str, float]]:
    """Candidates "a", "b", ... with one score per row."""
    return {chr(ord("a") + i): dict(zip(rows, column, strict=True)) for i, column in enumerate(columns)}


ALL_RIGHT = [1.0] * 20
ONE_MISS = [1.0] * 19 + [0.0]
ALL_WRONG = [0.0] * 20
HALF = [1.0, 0.0] * 10


# -- the schedule ----------------------------------------------------------------------
def test_the_first_slice_is_a_tenth_of_the_rows_and_at_least_ten():
    assert racing.default_min_items(200) == 20
    assert racing.default_min_items(50) == 10
    assert racing.default_min_items(6) == 6  # a small dataset is one round on every row


def test_each_round_doubles_the_rows_until_they_run_out():
    assert racing.schedule(200) == [20, 40, 80, 160, 200]
    assert racing.schedule(100, min_items=10, eta=3) == [10, 30, 90, 100]
    assert racing.schedule(40, min_items=40) == [40]


def test_a_small_eta_still_adds_a_row_each_round():
    assert racing.schedule(5, min_items=2, eta=1.1) == [2, 3, 4, 5]


def test_the_row_order_is_one_seeded_shuffle():
    order = racing.row_order(ROWS, 7)
    assert sorted(order) == sorted(ROWS) and order != ROWS
    assert racing.row_order(ROWS, 7) == order
    assert racing.row_order(ROWS, 8) != order
    assert racing.row_order(ROWS, None) == racing.row_order(ROWS, 0)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ((1, 2, 0.95), "min_items"),
        ((True, 2, 0.95), "min_items"),
        ((10, 1, 0.95), "eta"),
        ((10, "2", 0.95), "eta"),
        ((10, 2, 1.0), "confidence"),
        ((10, 2, 0.2), "confidence"),
    ],
)
def test_bad_options_are_named(options, fragment):
    assert fragment in racing.options_problem(*options)


def test_good_options_pass():
    assert racing.options_problem(None, 2, 0.95) is None
    assert racing.options_problem(10, 1.5, 0.99) is None


# -- one round's decision ------------------------------------------------------------------
def test_a_clear_loser_is_dropped_and_a_near_tie_survives():
    decision = racing.decide(table(ALL_RIGHT, ONE_MISS, ALL_WRONG), alpha=0.001)
    assert decision.leader == "a"
    assert decision.survivors == ["a", "b"] and decision.eliminated == ["c"]
    assert decision.p_values["b"] > 0.1  # one row of twenty is no evidence
    assert decision.p_values["c"] == 0.5**20  # no spread: the exact sign test


def test_the_leader_is_the_best_mean_wherever_it_stands():
    decision = racing.decide(table(HALF, ALL_WRONG, ALL_RIGHT), alpha=0.001)
    assert decision.leader == "c" and decision.survivors[0] == "c"
    assert "c" not in decision.eliminated


def test_a_tie_for_the_lead_goes_to_the_first_candidate():
    assert racing.decide(table(HALF, HALF), alpha=0.05).leader == "a"


def test_only_rows_both_have_scored_are_compared():
    leader = dict(zip(ROWS, ALL_RIGHT, strict=True))
    other = {f"elsewhere{i}": 0.0 for i in range(20)}  # plenty of bad scores, on other rows
    decision = racing.decide({"a": leader, "b": other}, alpha=0.05)
    assert decision.eliminated == [] and decision.p_values["b"] == 1.0


def test_the_correction_for_many_tests_spares_a_moderate_gap():
    # 16 of 20 right against 10 of 20: a gap one test at 0.05 would call, 140 tests would not.
    scores = table([1.0] * 16 + [0.0] * 4, HALF)
    p = racing.decide(scores, alpha=0.05).p_values["b"]
    corrected = racing.comparison_alpha(0.95, rounds=5, candidates=36)
    assert corrected == pytest.approx(0.05 / (4 * 35))
    assert corrected < p <= 0.05
    assert racing.decide(scores, alpha=0.05).eliminated == ["b"]
    assert racing.decide(scores, alpha=corrected).eliminated == []


def test_no_scores_drop_nobody():
    decision = racing.decide({"a": {}, "b": {}}, alpha=0.05)
    assert decision.leader is None and decision.survivors == ["a", "b"]


def test_the_last_round_ranks_the_survivors_and_drops_nobody():
    decision = racing.final_round(table(HALF, ALL_RIGHT, ALL_WRONG))
    assert decision.leader == "b" and decision.survivors == ["b", "a", "c"] and decision.eliminated == []


def test_calls_count_each_candidate_on_the_rows_new_to_it():
    # 36 on 20 rows, 10 on 20 more, 3 on 40 more; two calls per row (a two-stage pipeline).
    assert racing.calls_of([(20, 36), (40, 10), (80, 3)], calls_per_row=2) == 2 * (720 + 200 + 120)


# -- Student's t ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("t", "df", "tail"),
    [(2.093, 19, 0.025), (1.96, 10**6, 0.025), (0.0, 5, 0.5), (3.883, 19, 0.0005), (-2.093, 19, 0.975)],
)
def test_the_t_tail_matches_the_tables(t, df, tail):
    assert racing.t_sf(t, df) == pytest.approx(tail, rel=2e-3)


# -- the guarantee ----------------------------------------------------------------------
def race(accuracy: list[float], rng: random.Random, n_rows: int = 160) -> set[int]:
    """A whole race on simulated right/wrong answers; returns the survivors."""
    answers = [[1.0 if rng.random() < p else 0.0 for _ in range(n_rows)] for p in accuracy]
    slices = racing.schedule(n_rows)
    alpha = racing.comparison_alpha(0.95, len(slices), len(accuracy))
    alive = list(range(len(accuracy)))
    for rows in slices[:-1]:
        scores = {c: dict(enumerate(answers[c][:rows])) for c in alive}
        alive = racing.decide(scores, alpha).survivors
        if len(alive) == 1:
            break
    return set(alive)


def test_the_true_best_is_rarely_dropped_and_clear_losers_usually_are():
    accuracy = [0.8] + [0.7] * 4 + [0.3] * 10
    rng = random.Random(2024)
    outcomes = [race(accuracy, rng) for _ in range(200)]
    assert sum(0 not in alive for alive in outcomes) <= 0.05 * 200
    assert sum(len(alive & set(range(5, 15))) for alive in outcomes) <= 0.05 * 200 * 10
