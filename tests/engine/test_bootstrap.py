"""engine.bootstrap: the vectorised percentile bootstrap the leaderboard uses."""

from engine import bootstrap


def plain_python_interval(values: list[float]) -> tuple[float, float]:
    """The same draws, resampled one mean at a time."""
    n = len(values)
    means = sorted(sum(values[i] for i in row) / n for row in bootstrap.draws(n).tolist())
    last = len(means) - 1
    return means[round(0.025 * last)], means[round(0.975 * last)]


def test_the_interval_is_the_percentile_bootstrap_of_the_mean():
    values = [0.1, 0.9, 0.4, 0.4, 1.0, 0.0, 0.7]
    assert bootstrap.interval(dict(enumerate(values))) == plain_python_interval(values)


def test_identical_scores_give_a_zero_width_interval_and_no_items_none():
    assert bootstrap.interval({1: 0.5, 2: 0.5, 3: 0.5}) == (0.5, 0.5)
    assert bootstrap.interval({7: 0.25}) == (0.25, 0.25)
    assert bootstrap.interval({}) == (None, None)


def test_rows_tested_together_tie_as_they_do_one_at_a_time():
    leader = {i: 1.0 for i in range(20)}
    rows = [
        {i: (0.9 if i % 2 else 1.0) for i in range(20)},
        dict(leader),
        {i: 1.0 for i in range(10)},
        {50: 1.0},
    ]
    together = bootstrap.ties(leader, rows)
    assert together == [bootstrap.ties(leader, [row])[0] for row in rows]
    assert together == [False, True, True, None]


def test_items_line_up_by_key_whatever_order_they_came_in():
    forward = {i: i / 10 for i in range(10)}
    backward = dict(reversed(list(forward.items())))
    assert bootstrap.interval(forward) == bootstrap.interval(backward)
