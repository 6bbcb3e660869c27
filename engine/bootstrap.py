"""Percentile bootstrap of a mean over items, vectorised with numpy.

The draws depend only on the number of items (fixed seed), so a run's interval
can be computed once when it completes and stored, and two runs bootstrapped
over the same number of shared items use the same draws (paired).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

RESAMPLES = 2000
SEED = 20_240_617
CONFIDENCE = 0.95


@lru_cache(maxsize=64)
def draws(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Item indices, one row per resample; read-only because it is shared."""
    picked = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    picked.setflags(write=False)
    return picked


def resampled_means(vectors: Sequence[Sequence[float]]) -> np.ndarray:
    """Bootstrap means of equally long vectors (rows), all with the same draws."""
    matrix = np.asarray(vectors, dtype=float)
    if matrix.shape[1] == 1:
        return np.repeat(matrix, RESAMPLES, axis=1)
    return matrix[:, draws(matrix.shape[1])].mean(axis=2)


def percentile_intervals(means: np.ndarray, confidence: float = CONFIDENCE) -> list[tuple[float, float]]:
    """Nearest-rank percentile interval of each row of bootstrap means."""
    ordered = np.sort(means, axis=1)
    last = ordered.shape[1] - 1
    tail = (1 - confidence) / 2
    low, high = ordered[:, round(tail * last)], ordered[:, round((1 - tail) * last)]
    return [(float(a), float(b)) for a, b in zip(low, high, strict=True)]


def ordered_values(items: Mapping[Any, float]) -> list[float]:
    """An item vector in one fixed order (by key as text) so draws line up."""
    return [items[key] for key in sorted(items, key=str)]


def interval(items: Mapping[Any, float]) -> tuple[float | None, float | None]:
    """The 95% interval of the mean over items, or (None, None) without items."""
    if not items:
        return None, None
    return percentile_intervals(resampled_means([ordered_values(items)]))[0]


def ties(leader: Mapping[Any, float], others: Sequence[Mapping[Any, float]]) -> list[bool | None]:
    """For each row: whether the paired 95% interval of (row − leader) over shared
    items includes 0; None when they share no item. Rows sharing the same items
    (the usual case) are bootstrapped together in one array operation."""
    groups: dict[tuple, list[int]] = {}
    for i, items in enumerate(others):
        shared = tuple(sorted(set(leader) & set(items), key=str))
        groups.setdefault(shared, []).append(i)
    found: list[bool | None] = [None] * len(others)
    for shared, rows in groups.items():
        if not shared:
            continue
        diffs = [[others[i][k] - leader[k] for k in shared] for i in rows]
        for i, (low, high) in zip(rows, percentile_intervals(resampled_means(diffs)), strict=True):
            found[i] = low <= 0.0 <= high
    return found
