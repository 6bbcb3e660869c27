"""Pages that show runs: the dashboard, an experiment's overview, its export and report,
launch, the live view, the leaderboard, charts, run detail."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Max, OuterRef, Prefetch, Q, Subquery
from django.db.models.fields.json import KT
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST, require_safe

from engine.runner import RunFailure
from experiments.models import Experiment
from experiments.views import experiment_for, scorer_rows
from projects.access import get_for_user
from projects.models import Role
from projects.views import current_project
from runs import export
from runs.charts import CHART_POINTS, histogram, scatter
from runs.compare import best_run, compare_runs, marked_diff, previous_sweep
from runs.events import event_bus
from runs.forms import LaunchForm, RatingForm
from runs.judging import judge_names, judges, run_judge_stats
from runs.leaderboard import RatingRefused, leaderboard, ranked_runs, record_rating
from runs.local_build import read_status
from runs.markdown import render_markdown
from runs.matrix import FILTERS, choosable_runs, chosen_runs, matrix_cells, matrix_rows
from runs.models import (
    ACTIVE_SWEEP_STATUSES,
    Run,
    RunStatus,
    Score,
    ScoreSource,
    StageResult,
    Sweep,
    SweepStateError,
    SweepStatus,
)
from runs.racing import race_summary
from runs.report import report_markdown
from runs.sweeps import SweepRequestError, check_launchable, launch_sweep
from runs.templatetags.money import money

CONTROLS = {"pause": Sweep.pause, "resume": Sweep.resume, "stop": Sweep.stop}
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED)
MAX_IDS = 200
LIVE_ROWS = 50
LEADERBOARD_ROWS = 50
ITEMS_PER_PAGE = 10
COMPARED_PER_PAGE = 50
MATRIX_ROWS = 25
NEARLY_AS_GOOD = 0.02  # without a tie test: within this of the best score


# -- the dashboard and an experiment's overview ---------------------------------------
@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    project = current_project(request)
    finished = Q(runs__status=RunStatus.COMPLETED)
    last_sweep = Sweep.objects.filter(experiment=OuterRef("pk")).order_by("-created_at")
    experiments = (
        Experiment.objects.filter(project=project)
        .select_related("endpoint")
        .annotate(best_score=Max("runs__weighted_score", filter=finished))
        .annotate(last_sweep_status=Subquery(last_sweep.values("status")[:1]))
        .prefetch_related(
            Prefetch(
                "sweeps", Sweep.objects.filter(status__in=ACTIVE_SWEEP_STATUSES), to_attr="active_sweeps"
            )
        )
    )
    recent_runs = (
        Run.objects.filter(experiment__project=project, status__in=(RunStatus.COMPLETED, RunStatus.FAILED))
        .select_related("experiment")
        .order_by("-finished_at", "-id")[:10]
    )
    context = {
        "experiments": experiments,
        "recent_runs": recent_runs,
        "project": project,
        "nav": "dashboard",
        "model_build": read_status(),
    }
    return render(request, "experiments/dashboard.html", context)


@login_required
@require_safe
def experiment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request, pk)
    context = {
        "experiment": experiment,
        "tab": "overview",
        "item_count": experiment.items.count(),
        "sweeps": experiment.sweeps.all()[:20],
        "scorers": scorer_rows(experiment),
        "variables": experiment.dataset_variables(),
        "judges": judges(experiment),
    }
    return render(request, "experiments/detail.html", context)


# -- exports and the report ------------------------------------------------------------
@login_required
@require_safe
def export_config(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The best configuration (or `?run=<id>`'s) as a file, as the API exports it."""
    experiment = experiment_for(request, pk)
    if fmt not in export.FORMATS:
        raise Http404("Export as json, yaml or env.")
    run_id = request.GET.get("run", "")
    if run_id:
        run = get_object_or_404(Run, pk=run_id if run_id.isdigit() else 0, experiment=experiment)
    else:
        run = export.best_run(experiment)
    if run is None:
        raise Http404("No completed, scored run yet: run a sweep first.")
    try:
        writer, media_type = export.FORMATS[fmt]
        body = writer(export.exported_config(run))
    except RunFailure as exc:
        messages.error(request, f"Run #{run.pk} cannot be exported: {exc}")
        return redirect("ui:report", pk=pk)
    response = HttpResponse(body, content_type=f"{media_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export.export_filename(run, fmt)}"'
    return response


@login_required
@require_safe
def report(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request, pk)
    markdown = report_markdown(experiment)
    context = {
        "experiment": experiment,
        "tab": "report",
        "html": mark_safe(render_markdown(markdown)),  # noqa: S308 - every text piece is escaped
        "best": export.best_run(experiment),
    }
    return render(request, "experiments/report.html", context)


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
