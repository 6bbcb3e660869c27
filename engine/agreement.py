"""How far a judge agrees with people: rank correlation and distance on the 1-10 scale.

Pure arithmetic on (judge rating, human rating) pairs; runs/judging.py gathers the
pairs from the database.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TypedDict

MIN_PAIRS = 20  # below this a rank correlation says little either way
AGREES_WELL = 0.7
AGREES_MODERATELY = 0.4
WEAK = 0.2
FAR_APART = 2.0  # rating points: ranks may agree while the levels do not


class Agreement(TypedDict):
    pairs: int
    spearman: float | None  # None: fewer than 2 pairs, or one side rated everything alike
    mean_abs_diff: float | None  # |judge - human| on the 1-10 scale
    verdict: str


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        shared = (start + end) / 2 + 1
        for i in order[start : end + 1]:
            ranks[i] = shared
        start = end + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho as the Pearson correlation of average ranks, which stays
    exact with ties (the 1 - 6Σd²/(n(n²-1)) shortcut does not)."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} judge ratings but {len(ys)} human ratings")
    if len(xs) < 2:
        return None
    rx, ry = average_ranks(xs), average_ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    if sx == 0 or sy == 0:
        return None
    return cov / (sx * sy)


def mean_abs_diff(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if not xs:
        return None
    return statistics.fmean(abs(a - b) for a, b in zip(xs, ys, strict=True))


def verdict(pairs: int, rho: float | None, distance: float | None) -> str:
    if pairs < MIN_PAIRS:
        return f"too few ratings: {pairs} < {MIN_PAIRS}"
    if rho is None:
        return "cannot tell: the judge or the people gave every output the same rating"
    if rho >= AGREES_WELL:
        words = "agrees well"
    elif rho >= AGREES_MODERATELY:
        words = "agrees moderately"
    elif rho >= WEAK:
        words = "weak"
    else:
        words = "does not agree"
    if distance is not None and distance > FAR_APART:
        words += f", but {distance:.1f} rating points apart on average"
    return words


def agreement(judge: Sequence[float], human: Sequence[float]) -> Agreement:
    """The figures for paired ratings on the 1-10 scale (judge[i] and human[i] rate one output)."""
    rho = spearman(judge, human)
    distance = mean_abs_diff(judge, human)
    return Agreement(
        pairs=len(judge), spearman=rho, mean_abs_diff=distance, verdict=verdict(len(judge), rho, distance)
    )
