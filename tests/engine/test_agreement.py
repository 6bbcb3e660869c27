"""Agreement of a judge with people: Spearman's rho with average ranks for ties,
the mean absolute difference on the 1-10 scale, and a verdict in plain words."""

from __future__ import annotations

import math

import pytest

from engine.agreement import agreement, average_ranks, mean_abs_diff, spearman, verdict


def test_tied_values_share_the_mean_of_their_ranks():
    assert average_ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert average_ranks([5, 5, 5]) == [2, 2, 2]
    assert average_ranks([3, 1, 2]) == [3, 1, 2]
    assert average_ranks([]) == []


def test_spearman_without_ties_matches_the_textbook_formula():
    # d = (-1, 1, -1, 1, 0): 1 - 6 * 4 / (5 * (25 - 1)) = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)


def test_spearman_with_ties_is_the_correlation_of_average_ranks():
    # Ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): cov 4.5, variances 4.5 and 5, rho = sqrt(0.9).
    # The no-ties shortcut would say 1 - 6 * 0.5 / 60 = 0.95: it is wrong with ties.
    rho = spearman([1, 2, 2, 3], [1, 3, 2, 4])
    assert rho == pytest.approx(math.sqrt(0.9))
    assert rho != pytest.approx(0.95)


def test_spearman_is_one_for_the_same_order_and_minus_one_for_the_reverse():
    assert spearman([1, 5, 9], [2, 3, 10]) == pytest.approx(1.0)
    assert spearman([1, 5, 9], [10, 3, 2]) == pytest.approx(-1.0)


def test_spearman_is_undefined_for_one_pair_or_one_rating_for_all():
    assert spearman([7], [8]) is None
    assert spearman([7, 7, 7], [1, 5, 9]) is None


def test_mismatched_lengths_are_a_bug():
    with pytest.raises(ValueError, match="3 judge ratings but 2 human ratings"):
        spearman([1, 2, 3], [1, 2])


def test_the_mean_absolute_difference_is_in_rating_points():
    assert mean_abs_diff([2, 5, 5, 8], [2, 6, 4, 8]) == pytest.approx(0.5)
    assert mean_abs_diff([], []) is None


@pytest.mark.parametrize(
    ("pairs", "rho", "distance", "words"),
    [
        (7, 0.99, 0.1, "too few ratings: 7 < 20"),
        (20, 0.9, 0.5, "agrees well"),
        (20, 0.5, 0.5, "agrees moderately"),
        (40, 0.3, 1.0, "weak"),
        (40, -0.4, 3.0, "does not agree, but 3.0 rating points apart on average"),
        (25, 0.8, 2.5, "agrees well, but 2.5 rating points apart on average"),
        (25, None, 0.0, "cannot tell: the judge or the people gave every output the same rating"),
    ],
)
def test_the_verdict_says_in_words_how_far_to_trust_the_judge(pairs, rho, distance, words):
    assert verdict(pairs, rho, distance) == words


def test_agreement_puts_the_figures_together():
    judge = [2, 5, 5, 8] * 5
    human = [2, 6, 4, 8] * 5
    figures = agreement(judge, human)
    # Repeating every pair keeps rho: the ranks stay an increasing affine map of the ratings.
    assert figures == {
        "pairs": 20,
        "spearman": pytest.approx(math.sqrt(0.9)),
        "mean_abs_diff": pytest.approx(0.5),
        "verdict": "agrees well",
    }
