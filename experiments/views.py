"""Experiment pages: the dashboard, the editor, the dataset, exports and the report."""

from __future__ import annotations

import json
import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Max, OuterRef, Prefetch, Q, Subquery
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST, require_safe

from engine.runner import RunFailure
from engine.scorers import SCORERS
from engine.scorers.base import option_fields
from experiments.dataset_import import write_rows
from experiments.forms import (
    BUILTIN_VARIABLES,
    DatasetImportForm,
    DatasetItemForm,
    ExperimentEditor,
    variables_used,
)
from experiments.models import DatasetItem, Experiment, ExperimentFrozen
from experiments.validation import check_template
from projects.access import check_role, get_for_user
from projects.models import Role
from projects.views import current_project, require_current_project
from runs import export
from runs.judging import judges
from runs.local_build import read_status
from runs.models import ACTIVE_SWEEP_STATUSES, Run, RunStatus, Sweep
from runs.report import report_markdown

PREVIEW_ROWS = 20
IMPORT_SESSION_KEY = "dataset-import-{}"
LINE_RE = re.compile(r"line (\d+)")


def experiment_for(request: HttpRequest, pk: int, role: str = Role.VIEWER) -> Experiment:
    """The user's experiment: 404 outside their projects, 403 below `role`."""
    queryset = Experiment.objects.select_related("endpoint", "project")
    return get_for_user(queryset, request.user, role, pk=pk)


def role_for(request: HttpRequest) -> str:
    """Reading a page needs a viewer; posting to it (a change) an editor."""
    return Role.EDITOR if request.method == "POST" else Role.VIEWER


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


def scorer_rows(experiment: Experiment) -> list[dict]:
    rows = []
    for scorer in experiment.scorers:
        cls = SCORERS.get(scorer.get("type"))
        costs = bool(cls and cls.spends_tokens(scorer.get("config") or {}, experiment.endpoint))
        rows.append(dict(scorer, costs_tokens=costs))
    return rows


# -- editor ------------------------------------------------------------------------
@login_required
def experiment_create(request: HttpRequest) -> HttpResponse:
    project = require_current_project(request)
    check_role(project.member_role, Role.EDITOR)
    return _editor(request, Experiment(project=project))


@login_required
def experiment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _editor(request, experiment_for(request, pk, Role.EDITOR))


def _editor(request: HttpRequest, experiment: Experiment) -> HttpResponse:
    editor = ExperimentEditor(experiment, request.POST if request.method == "POST" else None)
    if request.method == "POST" and editor.is_valid():
        try:
            experiment = editor.save(request.user)
        except ValidationError as exc:  # the model's own check: the same rules, all at once
            editor.form.add_error(None, exc.messages)
        except ExperimentFrozen as exc:
            editor.form.add_error(None, str(exc))
        else:
            messages.success(request, f"Saved experiment '{experiment.name}'.")
            return redirect("ui:experiment_detail", pk=experiment.pk)
    variables = experiment.dataset_variables() if experiment.pk else []
    costly = [name for name, cls in SCORERS.items() if cls.spends_tokens({}, experiment.endpoint)]
    context = {
        "experiment": experiment,
        "editor": editor,
        "tab": "edit",
        "nav": "" if experiment.pk else "new",
        "variables": variables,
        "builtin_variables": BUILTIN_VARIABLES,
        "scorer_types": [
            {"name": name, "description": cls.description, "costs_tokens": name in costly}
            for name, cls in sorted(SCORERS.items())
        ],
        "costly": costly,
        "scorer_options": {name: option_fields(cls.Options) for name, cls in SCORERS.items()},
    }
    return render(request, "experiments/edit.html", context)


@login_required
@require_POST
def check_template_view(request: HttpRequest) -> JsonResponse:
    """The editor's live check: the same check as saving, for one template."""
    try:
        payload = json.loads(request.body or b"{}")
        source, where = str(payload.get("source", "")), str(payload.get("where") or "Template")[:200]
    except (ValueError, AttributeError):
        return JsonResponse({"ok": False, "error": "Send JSON: {source, where}."}, status=400)
    try:
        check_template(source, where, "template")
    except ValidationError as exc:
        error = exc.message_dict["template"][0]
        match = LINE_RE.search(error)
        return JsonResponse({"ok": False, "error": error, "line": int(match[1]) if match else None})
    return JsonResponse({"ok": True, "error": None, "variables": variables_used(source)})


# -- dataset --------------------------------------------------------------------------
@login_required
def dataset(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request, pk, role_for(request))
    variables = experiment.dataset_variables()
    form = DatasetItemForm(
        request.POST or None, variables=variables, instance=DatasetItem(experiment=experiment)
    )
    if request.method == "POST" and form.is_valid() and changeable(request, experiment):
        item = form.save(commit=False)
        item.position = experiment.next_position()
        item.save()
        messages.success(request, f"Added row #{item.number}.")
        return redirect("ui:dataset", pk=pk)
    items = experiment.items.all()
    context = {
        "experiment": experiment,
        "tab": "dataset",
        "variables": variables,
        "rows": [(item, [item.input.get(v, "") for v in variables]) for item in items],
        "form": form,
        "import_form": DatasetImportForm(),
    }
    return render(request, "experiments/dataset.html", context)


def changeable(request: HttpRequest, experiment: Experiment) -> bool:
    """False, with a message saying why, while a sweep runs on the dataset."""
    try:
        experiment.check_changeable(["its dataset"])
    except ExperimentFrozen as exc:
        messages.error(request, str(exc))
        return False
    return True


@login_required
def dataset_item_edit(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    experiment = experiment_for(request, pk, Role.EDITOR)
    item = get_object_or_404(
        DatasetItem.objects.select_related("experiment"), pk=item_pk, experiment=experiment
    )
    variables = sorted(set(item.experiment.dataset_variables()) | set(item.input or {}))
    form = DatasetItemForm(request.POST or None, variables=variables, instance=item)
    if request.method == "POST" and form.is_valid() and changeable(request, item.experiment):
        form.save()
        messages.success(request, f"Saved row #{item.number}.")
        return redirect("ui:dataset", pk=pk)
    context = {"experiment": item.experiment, "item": item, "form": form, "tab": "dataset"}
    return render(request, "experiments/dataset_item.html", context)


@login_required
@require_POST
def dataset_item_delete(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    experiment = experiment_for(request, pk, Role.EDITOR)
    item = get_object_or_404(
        DatasetItem.objects.select_related("experiment"), pk=item_pk, experiment=experiment
    )
    if changeable(request, item.experiment):
        item.delete()
        messages.success(request, f"Deleted row #{item.number}.")
    return redirect("ui:dataset", pk=pk)


@login_required
@require_POST
def dataset_import(request: HttpRequest, pk: int) -> HttpResponse:
    """Upload → preview. The parsed rows wait in the session until confirmed."""
    experiment = experiment_for(request, pk, Role.EDITOR)
    form = DatasetImportForm(request.POST, request.FILES)
    if not form.is_valid():
        context = {"experiment": experiment, "tab": "dataset", "import_form": form, "preview": None}
        return render(request, "experiments/dataset_import.html", context, status=400)
    rows, mode = form.cleaned_data["rows"], form.cleaned_data["mode"]
    try:
        experiment.check_dataset({name for row in rows for name in row["input"]}, mode)
    except ValidationError as exc:
        form.add_error(None, [m for ms in exc.message_dict.values() for m in ms])
        context = {"experiment": experiment, "tab": "dataset", "import_form": form, "preview": None}
        return render(request, "experiments/dataset_import.html", context, status=400)
    request.session[IMPORT_SESSION_KEY.format(pk)] = {"rows": rows, "mode": mode}
    columns = sorted({k for row in rows for k in row["input"]})
    preview = [([row["input"].get(c, "") for c in columns], row["reference"]) for row in rows[:PREVIEW_ROWS]]
    context = {
        "experiment": experiment,
        "tab": "dataset",
        "columns": columns,
        "preview": preview,
        "total": len(rows),
        "mode": mode,
        "current": experiment.items.count(),
    }
    return render(request, "experiments/dataset_import.html", context)


@login_required
@require_POST
def dataset_import_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for(request, pk, Role.EDITOR)
    pending = request.session.pop(IMPORT_SESSION_KEY.format(pk), None)
    if not pending:
        messages.error(request, "Nothing to import: upload the file again.")
        return redirect("ui:dataset", pk=pk)
    if not changeable(request, experiment):
        return redirect("ui:dataset", pk=pk)
    total = write_rows(experiment, pending["rows"], pending["mode"])
    messages.success(request, f"Imported {len(pending['rows']):,} rows; the dataset has {total:,}.")
    return redirect("ui:dataset", pk=pk)


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


# A small Markdown subset, enough for the report: headings, paragraphs, lists,
# pipe tables, fenced code, `code` and **bold**. All text is escaped first.
HEADING_RE = re.compile(r"^(#{1,6})\s+(.*)$")
LIST_RE = re.compile(r"^\s*[-*]\s+(.*)$")
RULE_RE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
CODE_SPAN_RE = re.compile(r"`([^`]+)`")
BOLD_RE = re.compile(r"\*\*(.+?)\*\*")
CELL_SPLIT_RE = re.compile(r"(?<!\\)\|")


def render_markdown(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            body = lines[i + 1 : end]
            chart = histogram_svg(body) if line == "```histogram" else None
            out.append(chart or f"<pre><code>{escape(chr(10).join(body))}</code></pre>")
            i = end + 1
        elif heading := HEADING_RE.match(line):
            level = len(heading[1])
            out.append(f"<h{level}>{inline(heading[2])}</h{level}>")
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and RULE_RE.match(lines[i + 1]):
            end = next((j for j in range(i + 2, len(lines)) if not lines[j].startswith("|")), len(lines))
            out.append(md_table(cells(line), [cells(row) for row in lines[i + 2 : end]]))
            i = end
        elif LIST_RE.match(line):
            end = next((j for j in range(i, len(lines)) if not LIST_RE.match(lines[j])), len(lines))
            items = "".join(f"<li>{inline(LIST_RE.match(row)[1])}</li>" for row in lines[i:end])
            out.append(f"<ul>{items}</ul>")
            i = end
        elif not line.strip():
            i += 1
        else:
            end = next(
                (j for j in range(i, len(lines)) if not lines[j].strip() or starts_block(lines[j])),
                len(lines),
            )
            out.append(f"<p>{inline(' '.join(lines[i : max(end, i + 1)]))}</p>")
            i = max(end, i + 1)
    return "\n".join(out)


HISTOGRAM_LINE_RE = re.compile(r"^(\S+) \| [█]* ?(\d+)$")


def histogram_svg(lines: list[str]) -> str | None:
    """The report's text histogram ("0.0–0.1 | ███ 3" a bin) as an SVG bar chart."""
    bins = [HISTOGRAM_LINE_RE.match(line) for line in lines]
    if not bins or not all(bins):
        return None
    counts = [int(b[2]) for b in bins]
    width, height, left, base, top = 400, 160, 8, 136, 16
    step, scale = (width - 2 * left) / len(bins), (base - top) / (max(counts) or 1)
    parts = [
        f'<svg class="chart histogram" viewBox="0 0 {width} {height}" role="img" aria-label="Runs per score bin">'
    ]
    for n, (match, count) in enumerate(zip(bins, counts, strict=True)):
        x, h = left + n * step, count * scale
        label = escape(match[1])
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{base - h:.1f}" width="{step - 2:.1f}" height="{h:.1f}">'
            f"<title>{label}: {count}</title></rect>"
        )
        if count:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{base - h - 3:.1f}" text-anchor="middle">{count}</text>'
            )
        if n % 2 == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{base + 14}" text-anchor="start">{label.split("–")[0]}</text>'
            )
    parts.append(f'<line class="axis" x1="{left}" x2="{width - left}" y1="{base}" y2="{base}"/></svg>')
    return "".join(parts)


def starts_block(line: str) -> bool:
    return line.startswith(("```", "|", "#")) or bool(LIST_RE.match(line))


def inline(text: str) -> str:
    parts = CODE_SPAN_RE.split(text)  # odd positions are code spans
    html = [
        f"<code>{escape(part)}</code>" if n % 2 else BOLD_RE.sub(r"<strong>\1</strong>", str(escape(part)))
        for n, part in enumerate(parts)
    ]
    return "".join(html)


def cells(row: str) -> list[str]:
    inner = row.strip()[1:]
    if inner.endswith("|") and not inner.endswith("\\|"):
        inner = inner[:-1]
    return [cell.strip().replace("\\|", "|") for cell in CELL_SPLIT_RE.split(inner)]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f'<th scope="col">{inline(c)}</th>' for c in header)
    body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
