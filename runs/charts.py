"""The charts page's SVG geometry: a score histogram and the cost scatter plots
(binned cells beyond CHART_POINTS runs, with the cheapest front)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

CHART_POINTS = 400  # runs drawn one dot each; beyond it all but the front are binned
CHART_CELLS = (40, 24)  # columns (cost) x rows (score) of the binned runs


def histogram(scores: list[float], bins: int = 10) -> dict:
    counts = [0] * bins
    for score in scores:
        counts[min(bins - 1, max(0, int(score * bins)))] += 1
    top = max(counts) or 1
    width, height, left, bottom, top_room = 400, 200, 36, 24, 28
    bar = (width - left - 8) / bins
    scale = (height - bottom - top_room) / top
    bars = [
        {
            "x": left + i * bar + 1,
            "y": height - bottom - n * scale,
            "w": bar - 2,
            "h": n * scale,
            "cx": left + (i + 0.5) * bar,
            "n": n,
            "label": f"{i / bins:.1f}–{(i + 1) / bins:.1f}",
        }
        for i, n in enumerate(counts)
    ]
    ticks = [{"x": left + i * bar, "label": f"{i / bins:.1f}"} for i in range(0, bins + 1, 2)]
    return {
        "bars": bars,
        "ticks": ticks,
        "top": top,
        "width": width,
        "height": height,
        "base": height - bottom,
        "left": left,
    }


def scatter(points: list[dict], cost: Any, label: str, pick: dict | None) -> dict:
    """Score (up) against a cost (right), the Pareto front joined by a line. Up to
    CHART_POINTS runs are drawn one dot each; beyond that the front (always exact,
    from every run) and the pick keep their dots and the others are binned into
    shaded cells, so the page stays small and readable at any number of runs."""
    frame = {"width": 400, "height": 240, "left": 40, "bottom": 28, "pad": 10}
    high = max((cost(p) for p in points), default=0) or 1
    front = {p["run_id"] for p in cheapest_front(points, cost)}
    alone = len(points) <= CHART_POINTS
    picked = pick["run_id"] if pick else None
    dots = [
        _dot(p, cost, high, frame, p["run_id"] in front, p["run_id"] == picked)
        for p in points
        if alone or p["run_id"] in front or p["run_id"] == picked
    ]
    rest = [] if alone else [p for p in points if p["run_id"] not in front and p["run_id"] != picked]
    return _axes(frame, high, label) | {
        "dots": dots,
        "cells": _cells(rest, cost, high, frame),
        "line": " ".join(f"{d['x']},{d['y']}" for d in sorted(dots, key=lambda d: d["x"]) if d["front"]),
    }


def _xy(score: float, value: float, high: float, f: dict) -> tuple[float, float]:
    x = f["left"] + value / high * (f["width"] - f["left"] - f["pad"])
    y = f["height"] - f["bottom"] - score * (f["height"] - f["bottom"] - f["pad"])
    return round(x, 1), round(y, 1)


def _dot(p: dict, cost: Any, high: float, f: dict, on_front: bool, picked: bool) -> dict:
    x, y = _xy(p["weighted_score"], cost(p), high, f)
    return {
        "x": x,
        "y": y,
        "run_id": p["run_id"],
        "score": p["weighted_score"],
        "cost": cost(p),
        "front": on_front,
        "pick": picked,
        "shown": nice(cost(p)),
    }


def _cells(points: list[dict], cost: Any, high: float, f: dict) -> list[dict]:
    """Runs counted per cell of a CHART_CELLS grid, shaded by their share."""
    columns, rows = CHART_CELLS
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for p in points:
        column = min(columns - 1, int(cost(p) / high * columns))
        row = min(rows - 1, max(0, int(p["weighted_score"] * rows)))
        counts[(column, row)] += 1
    width = (f["width"] - f["left"] - f["pad"]) / columns
    height = (f["height"] - f["bottom"] - f["pad"]) / rows
    top = max(counts.values(), default=1)
    return [
        {
            "x": round(f["left"] + column * width, 1),
            "y": round(f["height"] - f["bottom"] - (row + 1) * height, 1),
            "w": round(width, 1),
            "h": round(height, 1),
            "n": n,
            "shade": round(0.15 + 0.85 * n / top, 2),
        }
        for (column, row), n in sorted(counts.items())
    ]


def _axes(f: dict, high: float, label: str) -> dict:
    span, rise = f["width"] - f["left"] - f["pad"], f["height"] - f["bottom"] - f["pad"]
    base = f["height"] - f["bottom"]
    return {
        # The last label ends at the axis' end: centred there it would be cut off.
        "ticks": [
            {"x": f["left"] + t * span, "label": nice(high * t), "anchor": "end" if t == 1 else "middle"}
            for t in (0, 0.25, 0.5, 0.75, 1)
        ],
        "yticks": [{"y": base - t * rise, "label": f"{t:.1f}"} for t in (0, 0.5, 1)],
        "label": label,
        "width": f["width"],
        "height": f["height"],
        "left": f["left"],
        "base": base,
        "right": f["width"] - f["pad"],
        "top": f["pad"],
    }


def cheapest_front(points: list[dict], cost: Any) -> list[dict]:
    """The two-objective Pareto front (higher score, lower cost): every point that
    scores more than everything cheaper. O(n log n) over every ranked run."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (cost(p), -p["weighted_score"])):
        if p["weighted_score"] > best:
            front.append(p)
            best = p["weighted_score"]
    return front


def nice(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 10 or value == 0:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"  # cents and fractions of them
