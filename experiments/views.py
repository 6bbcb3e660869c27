"""Experiment pages: the editor and the dataset (what shows runs lives in runs/views.py)."""

from __future__ import annotations

import json
import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

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
from projects.views import require_current_project

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
