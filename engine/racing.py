"""Racing: spend the dataset on the contenders, not on the clear losers.

Every candidate is scored on the same first slice of rows; after each round the
candidates that a paired comparison with the leader shows to be worse are
dropped, and the survivors go on to a slice `eta` times larger, until one is
left or the rows run out. Rows are taken in one seeded order, the same for every
candidate, so each comparison is paired: on the rows both have scored.

The elimination rule, and why it rarely drops the true best:

* For a candidate c and the round's leader L (the highest mean on the slice),
  d_i = score_L(i) - score_c(i) over the rows both scored. c is dropped when a
  one-sided paired t-test rejects "c is at least as good as L" at level alpha'.
  With no spread in d_i the t statistic is undefined, and the exact sign test
  is used instead: all n differences favour L with probability <= 2^-n when a
  positive difference is no likelier than a negative one (exact for right/wrong
  scores, where "c at least as good" means just that; for other scores it
  tests the median difference).
* alpha' = (1 - confidence) / ((rounds - 1) x (candidates - 1)). The true best b
  is dropped only if, after some round, the candidate that leads beats b; the
  leader is chosen after seeing the data, so any of the other candidates can be
  it. Each of those "c beats b" tests, for c no better than b, errs with
  probability <= alpha', and there are at most (rounds - 1) x (candidates - 1)
  of them (no test follows the last round). By the union bound (Bonferroni) the
  chance of ever dropping the true best is <= 1 - confidence, up to the t-test's
  normal approximation of a mean of per-row differences.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from engine.params import is_number

DEFAULT_ETA = 2.0
DEFAULT_CONFIDENCE = 0.95
MIN_FIRST_SLICE = 10  # rows in the first round, unless the dataset is smaller
FIRST_SLICE_SHARE = 0.10  # ...or this share of the dataset, whichever is more
_CF_ITERATIONS = 300
_CF_EPSILON = 1e-13
_TINY = 1e-300

K = TypeVar("K", bound=Hashable)
R = TypeVar("R", bound=Hashable)


# -- options and the schedule -------------------------------------------------------
def options_problem(min_items: object, eta: object, confidence: object) -> str | None:
    """What is wrong with racing options (None when they are fine)."""
    if min_items is not None and (not _is_int(min_items) or min_items < 2):
        return "Racing option min_items must be a whole number, 2 or more (a paired test needs two rows)."
    if not is_number(eta) or eta <= 1:
        return "Racing option eta must be a number above 1 (2 doubles the rows each round)."
    if not is_number(confidence) or not 0.5 <= confidence < 1:
        return "Racing option confidence must be at least 0.5 and below 1 (e.g. 0.95)."
    return None


def default_min_items(n_items: int) -> int:
    return min(n_items, max(MIN_FIRST_SLICE, math.ceil(FIRST_SLICE_SHARE * n_items)))


def schedule(n_items: int, min_items: int | None = None, eta: float = DEFAULT_ETA) -> list[int]:
    """Rows scored by the end of each round: [first slice, x eta, ..., every row]."""
    rows = [min(n_items, default_min_items(n_items) if min_items is None else min_items)]
    while rows[-1] < n_items:
        rows.append(min(n_items, max(rows[-1] + 1, math.ceil(rows[-1] * eta))))
    return rows


def row_order(rows: Sequence[R], seed: int | None) -> list[R]:
    """The rows in the race's seeded order: every candidate is scored on a prefix of it."""
    order = list(rows)
    random.Random(f"racing:{0 if seed is None else seed}").shuffle(order)
    return order


def comparison_alpha(confidence: float, rounds: int, candidates: int) -> float:
    """The level of each elimination test (see the module's docstring)."""
    tests = max(1, rounds - 1) * max(1, candidates - 1)
    return (1 - confidence) / tests


def calls_of(rounds: Sequence[tuple[int, int]], calls_per_row: int) -> int:
    """LLM calls a race asks for: each round's candidates on the rows new to them
    (the cache answers the rows they saw in earlier rounds). `rounds`: (rows, candidates)."""
    calls, seen = 0, 0
    for rows, candidates in rounds:
        calls += candidates * (rows - seen) * calls_per_row
        seen = rows
    return calls


# -- one round's decision -----------------------------------------------------------
@dataclass
class RoundDecision:
    leader: object | None
    survivors: list = field(default_factory=list)  # the leader first, then in the given order
    eliminated: list = field(default_factory=list)
    p_values: dict = field(default_factory=dict)  # candidate -> one-sided p against the leader


def decide(scores: Mapping[K, Mapping[R, float]], alpha: float) -> RoundDecision:
    """Which candidates a round drops. `scores`: per candidate, per row, its score
    (the mean over repeats); a tie for the lead goes to the first in `scores`."""
    scored = {c: rows for c, rows in scores.items() if rows}
    if not scored:
        return RoundDecision(leader=None, survivors=list(scores))
    leader = max(scored, key=lambda c: statistics.fmean(scored[c].values()))  # first of equals
    decision = RoundDecision(leader=leader, survivors=[leader])
    for candidate in scores:
        if candidate == leader:
            continue
        p = paired_p_value(scores[leader], scores[candidate])
        decision.p_values[candidate] = p
        (decision.eliminated if p <= alpha else decision.survivors).append(candidate)
    return decision


def paired_p_value(leader: Mapping[R, float], other: Mapping[R, float]) -> float:
    """One-sided p of "other is at least as good as leader", on the rows both scored."""
    diffs = [leader[row] - other[row] for row in leader.keys() & other.keys()]
    n = len(diffs)
    if n < 2:
        return 1.0
    mean, spread = statistics.fmean(diffs), statistics.stdev(diffs)
    if spread == 0:  # every row the same difference: the sign test's exact p
        return 0.5**n if mean > 0 else 1.0
    return t_sf(mean / (spread / math.sqrt(n)), n - 1)


def final_round(scores: Mapping[K, Mapping[R, float]]) -> RoundDecision:
    """After the last round no test follows: the survivors are ranked, none dropped."""
    order = ranking(scores)
    return RoundDecision(leader=order[0] if order else None, survivors=order)


def ranking(scores: Mapping[K, Mapping[R, float]]) -> list[K]:
    """Candidates by mean score, best first (ties in the given order)."""
    means = {c: statistics.fmean(rows.values()) if rows else -math.inf for c, rows in scores.items()}
    return sorted(scores, key=lambda c: -means[c])


# -- Student's t, without SciPy --------------------------------------------------------
def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1 - tail


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (Numerical Recipes, 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    # The continued fraction converges fast only on this side of the mean; use symmetry otherwise.
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1 - front * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the incomplete beta function's continued fraction."""
    c, d = 1.0, _nonzero(1 - (a + b) * x / (a + 1))
    d = 1 / d
    h = d
    for m in range(1, _CF_ITERATIONS):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d, c = 1 / _nonzero(1 + even * d), _nonzero(1 + even / c)
        h *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d, c = 1 / _nonzero(1 + odd * d), _nonzero(1 + odd / c)
        h *= d * c
        if abs(d * c - 1) < _CF_EPSILON:
            break
    return h


def _nonzero(value: float) -> float:
    return value if abs(value) >= _TINY else _TINY


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
