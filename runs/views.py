"""Sweep and run pages: launch, the live view, the leaderboard, charts, run detail."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models.fields.json import KT
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from experiments.models import Experiment
from experiments.views import experiment_for
from projects.access import get_for_user
from projects.models import Role
from runs.compare import best_run, compare_runs, marked_diff, previous_sweep
from runs.events import event_bus
from runs.forms import LaunchForm, RatingForm
from runs.judging import judge_names, run_judge_stats
from runs.leaderboard import RatingRefused, leaderboard, ranked_runs, record_rating
from runs.matrix import FILTERS, choosable_runs, chosen_runs, matrix_cells, matrix_rows
from runs.models import Run, RunStatus, Score, ScoreSource, StageResult, Sweep, SweepStateError, SweepStatus
from runs.racing import race_summary
from runs.sweeps import SweepRequestError, check_launchable, launch_sweep
from runs.templatetags.money import money

CONTROLS = {"pause": Sweep.pause, "resume": Sweep.resume, "stop": Sweep.stop}
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED)
MAX_IDS = 200
LIVE_ROWS = 50
LEADERBOARD_ROWS = 50
CHART_POINTS = 400  # runs drawn one dot each; beyond it all but the front are binned
CHART_CELLS = (40, 24)  # columns (cost) x rows (score) of the binned runs
ITEMS_PER_PAGE = 10
COMPARED_PER_PAGE = 50
MATRIX_ROWS = 25
NEARLY_AS_GOOD = 0.02  # without a tie test: within this of the best score


# -- launch ---------------------------------------------------------------------------
@login_required
def launch(request: HttpRequest, pk: int) -> HttpResponse:
    """Form → confirmation with the plan's estimate → launch."""
    experiment = experiment_for(request, pk, Role.EDITOR)
    form = LaunchForm(request.POST or None, experiment=experiment)
    context: dict[str, Any] = {"experiment": experiment, "form": form, "tab": "launch"}
    context["active"] = experiment.active_sweep()
    if request.method != "POST" or "edit" in request.POST or not form.is_valid():
        return render(request, "runs/launch.html", context)
    try:
        if "confirm" in request.POST:
            sweep = launch_sweep(experiment, form.request, request.user, form.plan)
            messages.success(request, f"Launched sweep #{sweep.pk}: {sweep.total_runs} runs.")
            return redirect("ui:sweep", pk=sweep.pk)
        check_launchable(experiment)
        context["estimate"] = form.plan.estimate
    except SweepRequestError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, str(exc))
    except SweepStateError as exc:
        form.add_error(None, str(exc))
    return render(request, "runs/launch.html", context)


# -- the live view ------------------------------------------------------------------------
@login_required
@require_safe
def sweep_live(request: HttpRequest, pk: int) -> HttpResponse:
    # The last event id first: anything published after it is replayed by the socket.
    sweep = get_for_user(Sweep, request.user, pk=pk)
    last_event_id = last_event(sweep.experiment_id)
    sweep.refresh_from_db()
    experiment = sweep.experiment
    runs = sweep.runs.filter(status__in=FINISHED).order_by("-finished_at", "-id")[:LIVE_ROWS]
    varying = varying_keys([r.config for r in sweep.runs.only("config")[:CHART_POINTS]])
    context = {
        "experiment": experiment,
        "sweep": sweep,
        "tab": "sweeps",
        "rows": [run_row(run, varying, experiment) for run in runs],
        "cost": sweep_cost(sweep),
        "varying": varying,
        "best": ranked_runs(experiment, sweep.pk).first(),
        "last_event_id": last_event_id,
        "done": sweep.total_runs - sweep.remaining_runs,
        "percent": percent(sweep.total_runs - sweep.remaining_runs, sweep.total_runs),
        "token_percent": percent(sweep.tokens_used, sweep.token_budget),
        "calls_shown": min(sweep.calls_done, sweep.total_calls),
        "call_percent": percent(sweep.calls_done, sweep.total_calls),
        "controls": [("pause", "Pause"), ("resume", "Resume"), ("stop", "Stop")],
        "allowed": allowed_actions(sweep.status),
        "race": race_summary(sweep),
        "compare_url": None if sweep.is_active else sweep_comparison_url(sweep),
    }
    return render(request, "runs/sweep.html", context)


def percent(part: int, whole: int) -> int:
    return min(100, round(part * 100 / whole)) if whole else 0


def allowed_actions(status: str) -> list[str]:
    return {
        SweepStatus.PENDING: ["pause", "stop"],
        SweepStatus.RUNNING: ["pause", "stop"],
        SweepStatus.PAUSED: ["resume", "stop"],
    }.get(status, [])


def last_event(experiment_id: int) -> int:
    try:
        events = event_bus().recent(experiment_id)
    except Exception:  # the bus (Redis) is down: the socket replays what it keeps
        return 0
    return events[-1].id if events else 0


@login_required
@require_safe
def sweep_runs_json(request: HttpRequest, pk: int) -> JsonResponse:
    """Finished runs for the live view: `?ids=1,2` (from run events), else the latest."""
    sweep = get_for_user(Sweep, request.user, pk=pk)
    runs = sweep.runs.filter(status__in=FINISHED)
    if request.GET.get("ids"):
        try:
            ids = [int(i) for i in request.GET["ids"].split(",")[:MAX_IDS]]
        except ValueError:
            return JsonResponse({"error": "ids must be run ids separated by commas."}, status=400)
        runs = runs.filter(pk__in=ids)
    runs = runs.order_by("-finished_at", "-id")[:MAX_IDS]
    varying = [k for k in request.GET.get("keys", "").split(",") if k]
    return JsonResponse({"runs": [run_row(run, varying, sweep.experiment) for run in runs]})


def sweep_cost(sweep: Sweep) -> float:
    runs = sweep.runs.filter(tokens_in__gt=0).values_list("config", "tokens_in", "tokens_out")
    return sum(sweep.experiment.cost(*run) for run in runs)


def run_row(run: Run, varying: list[str], experiment: Experiment) -> dict:
    config = {k: short(run.config.get(k)) for k in varying} if varying else run.config
    return {
        "id": run.pk,
        "url": reverse("ui:run", args=[run.pk]),
        "status": run.status,
        "weighted_score": run.weighted_score,
        "score_spread": run.score_spread,
        "tokens": run.total_tokens,
        "latency_ms": round(run.latency_ms, 1),
        "config": config,
        "error": run.error[:300],
        "eliminated_after": run.eliminated_after,
        "shown": shown_cells(run, config, experiment.cost(run.config, run.tokens_in, run.tokens_out)),
    }


def shown_cells(run: Run, config: dict, cost: float) -> dict:
    """The row's cells as text, formatted once here for the page and the live
    view alike (so a row added live reads exactly as one rendered by the server)."""
    score = "—" if run.weighted_score is None else f"{run.weighted_score:.3f}"
    return {
        "score": score,
        "config": [value if isinstance(value, str) else json.dumps(value) for value in config.values()],
        "tokens": f"{run.total_tokens:,}",
        "latency": f"{run.latency_ms:,.0f} ms",
        "cost": money(cost),
    }


def short(value: Any, limit: int = 60) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def varying_keys(configs: list[dict]) -> list[str]:
    """The parameters whose values differ between configurations, in first-seen order."""
    keys: dict[str, set] = {}
    for config in configs:
        for key, value in config.items():
            keys.setdefault(key, set()).add(repr(value))
    return [key for key, values in keys.items() if len(values) > 1 or len(configs) == 1]


@login_required
@require_POST
def sweep_control(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in CONTROLS:
        raise Http404("Unknown action; use pause, resume or stop.")
    sweep = get_for_user(Sweep, request.user, Role.EDITOR, pk=pk)
    try:
        CONTROLS[action](sweep)
    except SweepStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Sweep #{sweep.pk} is {sweep.get_status_display().lower()}.")
    return redirect("ui:sweep", pk=pk)


# -- leaderboard and charts ----------------------------------------------------------------
def sweep_filter(request: HttpRequest, experiment: Experiment) -> Sweep | None:
    sweep_id = request.GET.get("sweep")
    if not sweep_id:
        return None
    if not sweep_id.isdigit():
        raise Http404("No such sweep.")
    return get_object_or_404(Sweep, pk=sweep_id, experiment=experiment)


@login_required
@require_safe
def leaderboard_page(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request, pk)
    sweep = sweep_filter(request, experiment)
    rows = leaderboard(experiment, LEADERBOARD_ROWS, sweep.pk if sweep else None)
    varying = varying_keys([row["config"] for row in rows])
    scorers = sorted({name for row in rows for name in row["scorer_means"]})
    judges = judge_names(experiment)
    context = {
        "experiment": experiment,
        "sweep": sweep,
        "sweeps": experiment.sweeps.all()[:20],
        "tab": "leaderboard",
        "total_cost": sum(experiment.cost(r["config"], r["tokens_in"], r["tokens_out"]) for r in rows),
        "rows": [leaderboard_row(experiment, row, varying, scorers, judges) for row in rows],
        "varying": varying,
        "constant": {k: v for k, v in (rows[0]["config"].items() if rows else []) if k not in varying},
        "scorers": scorers,
        "judges": judges,
    }
    return render(request, "runs/leaderboard.html", context)


def leaderboard_row(
    experiment: Experiment, row: dict, varying: list[str], scorers: list[str], judges: list[str]
) -> dict:
    return dict(
        row,
        cost=experiment.cost(row["config"], row["tokens_in"], row["tokens_out"]),
        tokens=row["tokens_in"] + row["tokens_out"],
        params=[(key, row["config"].get(key)) for key in varying],
        means=[row["scorer_means"].get(name) for name in scorers],
        judge_cells=[row["judges"].get(name) for name in judges],
    )


@login_required
@require_safe
def charts(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request, pk)
    sweep = sweep_filter(request, experiment)
    sweep_id = sweep.pk if sweep else None
    # The leaderboard's runs (one per configuration), so the chart and its pick agree with it.
    points = chart_points(experiment, sweep_id)
    rows = leaderboard(experiment, LEADERBOARD_ROWS, sweep_id)  # once per page
    pick = cheapest_nearly_best(rows, points)
    context = {
        "experiment": experiment,
        "sweep": sweep,
        "sweeps": experiment.sweeps.all()[:20],
        "tab": "charts",
        "count": len(points),
        "drawn_alone": CHART_POINTS,
        "histogram": histogram([p["weighted_score"] for p in points]),
        "tokens_chart": scatter(points, lambda p: p["tokens_in"] + p["tokens_out"], "Tokens", pick),
        "latency_chart": scatter(points, lambda p: p["latency_ms"], "Mean latency (ms)", pick),
        "cost_chart": scatter(points, lambda p: p["cost"], f"Cost ({settings.CURRENCY})", pick),
        "pick": pick,
        "varying": varying_keys([row["config"] for row in rows]),
    }
    return render(request, "runs/charts.html", context)


POINT_FIELDS = ("run_id", "weighted_score", "tokens_in", "tokens_out", "latency_ms", "model")


def chart_points(experiment: Experiment, sweep_id: int | None) -> list[dict]:
    """Every ranked run's figures and cost: one small tuple per configuration, with
    only the model of its config (what its price depends on), not the config."""
    runs = ranked_runs(experiment, sweep_id).annotate(model=KT("config__model"))
    points = [dict(zip(POINT_FIELDS, row, strict=True)) for row in runs.values_list("id", *POINT_FIELDS[1:])]
    for p in points:
        p["cost"] = experiment.cost({"model": p["model"]}, p["tokens_in"], p["tokens_out"])
    return points


def cheapest_nearly_best(rows: list[dict], points: list[dict]) -> dict | None:
    """The cheapest configuration statistically tied with the leader (or within
    NEARLY_AS_GOOD of its score when the tie cannot be tested), with its config."""
    if not points:
        return None
    best = points[0]["weighted_score"]
    tied = {r["run_id"] for r in rows if r["tied_with_leader"]}
    close = [p for p in points if p["run_id"] in tied or p["weighted_score"] >= best - NEARLY_AS_GOOD]
    pick = min(close, key=lambda p: (p["tokens_in"] + p["tokens_out"], -p["weighted_score"]))
    return pick | {"config": Run.objects.values_list("config", flat=True).get(pk=pick["run_id"])}


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


# -- run detail and human review ---------------------------------------------------------
@login_required
@require_safe
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_for_user(Run.objects.select_related("experiment", "sweep"), request.user, pk=pk)
    item_ids = run.stage_results.values_list("item_id", flat=True).distinct().order_by("item_id")
    items = run.experiment.items.filter(pk__in=item_ids)
    if request.GET.get("item", "").isdigit():  # one row, from the side-by-side view
        items = items.filter(pk=request.GET["item"])
    page = Paginator(items, ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "experiment": run.experiment,
        "run": run,
        "tab": "sweeps",
        "page": page,
        "items": review_items(run, list(page.object_list), request.user),
        "config": sorted(run.config.items()),
        "run_errors": run.scores.filter(item__isnull=True, value__isnull=True, source=ScoreSource.AUTO),
        "judge_stats": run_judge_stats(run.scorer_stats, judge_names(run.experiment)).items(),
        "cost": run.experiment.cost(run.config, run.tokens_in, run.tokens_out),
    }
    return render(request, "runs/run.html", context)


def review_items(run: Run, items: list, user: Any) -> list[dict]:
    ids = [item.pk for item in items]
    stages = StageResult.objects.filter(run=run, item_id__in=ids)
    scores = Score.objects.filter(run=run, item_id__in=ids).select_related("author")
    out = {item.pk: {"item": item, "samples": {}, "ratings": [], "mine": None} for item in items}
    for stage in stages:
        sample = out[stage.item_id]["samples"].setdefault(stage.sample_index, {"stages": [], "scores": []})
        sample["stages"].append(stage)
    for score in scores:
        entry = out[score.item_id]
        if score.source == ScoreSource.HUMAN:
            score.rating = rating_of(score.value)
            entry["ratings"].append(score)
            if score.author_id == user.pk:
                entry["mine"] = score
        else:
            entry["samples"].setdefault(score.sample_index, {"stages": [], "scores": []})["scores"].append(
                score
            )
    for entry in out.values():
        mine = entry["mine"]
        initial = {"rating": rating_of(mine.value), "comment": mine.comment} if mine else None
        entry["form"] = RatingForm(initial=initial, prefix=f"item{entry['item'].pk}")
        entry["samples"] = sorted(entry["samples"].items())
    return [out[pk] for pk in ids]


def rating_of(value: float | None) -> int | None:
    return None if value is None else round(value * 9) + 1


@login_required
@require_POST
def rate_item(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    """A 1–10 rating of one row, stored as that person's human score for it."""
    run = get_for_user(Run.objects.select_related("experiment"), request.user, Role.EDITOR, pk=pk)
    item = get_object_or_404(run.experiment.items, pk=item_pk)
    form = RatingForm(request.POST, prefix=f"item{item.pk}")
    if not form.is_valid():
        messages.error(request, f"Row #{item.number}: choose a rating from 1 to 10.")
        return redirect(f"{reverse('ui:run', args=[pk])}#item-{item.pk}")
    rating = form.cleaned_data["rating"]
    try:
        record_rating(run, request.user, rating, form.cleaned_data["comment"], item)
    except RatingRefused as exc:
        messages.error(request, str(exc))
        return redirect(f"{reverse('ui:run', args=[pk])}#item-{item.pk}")
    messages.success(request, f"Saved your rating of {rating}/10 for row #{item.number}.")
    page = request.POST.get("page", "")
    suffix = f"?page={page}" if page.isdigit() else ""
    return redirect(f"{reverse('ui:run', args=[pk])}{suffix}#item-{item.pk}")


# -- comparing two runs ------------------------------------------------------------------
@login_required
@require_safe
def compare(request: HttpRequest) -> HttpResponse:
    """Run b against run a: `?a=&b=`, or the two runs ticked on the leaderboard (`?run=&run=`)."""
    ids = compared_ids(request)
    if ids is None:
        return render(request, "runs/compare_error.html", status=400)
    a = get_for_user(Run.objects.select_related("experiment"), request.user, pk=ids[0])
    b = get_for_user(Run, request.user, pk=ids[1])
    if b.experiment_id != a.experiment_id:
        raise Http404("Run b belongs to another experiment.")
    comparison = compare_runs(a, b)
    worse_only = request.GET.get("worse") == "1"
    items = [i for i in comparison["items"] if i["delta"] < 0] if worse_only else comparison["items"]
    page = Paginator(items, COMPARED_PER_PAGE).get_page(request.GET.get("page"))
    varying = varying_keys([a.config, b.config])
    context = {
        "experiment": a.experiment,
        "tab": "leaderboard",
        "a": a,
        "b": b,
        "comparison": comparison,
        "params": [(key, a.config.get(key), b.config.get(key)) for key in varying],
        "page": page,
        "rows": [dict(item, diff=marked_diff(item["a_output"], item["b_output"])) for item in page],
        "worse_only": worse_only,
        "page_query": page_query(request),
    }
    return render(request, "runs/compare.html", context)


def page_query(request: HttpRequest) -> str:
    """The page's query string without `page`, ready for `?{query}page=N`."""
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode() + "&" if params else ""


def compared_ids(request: HttpRequest) -> tuple[int, int] | None:
    ids = request.GET.getlist("run") or [request.GET.get("a", ""), request.GET.get("b", "")]
    if len(ids) != 2 or not all(i.isdigit() for i in ids):
        return None
    return int(ids[0]), int(ids[1])


def sweep_comparison_url(sweep: Sweep) -> str | None:
    """This sweep's best run against the previous sweep's best, when both have one."""
    earlier = previous_sweep(sweep)
    before = best_run(earlier) if earlier else None
    after = best_run(sweep) if before else None
    if after is None:
        return None
    return f"{reverse('ui:compare')}?a={before.pk}&b={after.pk}"


# -- the outputs side by side ------------------------------------------------------------
@login_required
@require_safe
def matrix(request: HttpRequest, pk: int) -> HttpResponse:
    """One row per dataset row, one column per chosen configuration (`?run=` ticked,
    else the leaderboard's top 4); `?filter=disagree|failures`, `?q=` text, `?page=`."""
    experiment = experiment_for(request, pk)
    sweep = sweep_filter(request, experiment)
    kind = request.GET.get("filter", "")
    if kind not in FILTERS:
        kind = ""
    text = request.GET.get("q", "").strip()[:200]
    choices = choosable_runs(experiment, sweep.pk if sweep else None)
    runs = chosen_runs(choices, [int(i) for i in request.GET.getlist("run") if i.isdigit()])
    rows = matrix_rows(experiment, [run.pk for run in runs], kind, text)
    page = Paginator(rows, MATRIX_ROWS).get_page(request.GET.get("page"))
    items = list(page.object_list)
    varying = varying_keys([run.config for run in choices])
    context = {
        "experiment": experiment,
        "sweep": sweep,
        "tab": "matrix",
        "choices": [(run, run in runs, column_label(run, varying)) for run in choices],
        "columns": [(run, column_label(run, varying)) for run in runs],
        "page": page,
        "rows": list(zip(items, matrix_cells(runs, items), strict=True)),
        "filters": FILTERS.items(),
        "kind": kind,
        "text": text,
        "page_query": page_query(request),
    }
    return render(request, "runs/matrix.html", context)


def column_label(run: Run, varying: list[str]) -> str:
    return ", ".join(f"{key}={short(run.config.get(key), 30)}" for key in varying) or f"run #{run.pk}"
