"""Endpoint pages: list, add, edit (the key is write-only) and test the connection."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from endpoints.forms import EndpointForm
from endpoints.models import Endpoint
from projects.access import check_role, get_for_user
from projects.models import Role
from projects.views import current_project, require_current_project


@login_required
@require_safe
def endpoint_list(request: HttpRequest) -> HttpResponse:
    project = current_project(request)
    endpoints = Endpoint.objects.filter(project=project) if project else Endpoint.objects.none()
    context = {"endpoints": endpoints, "project": project, "nav": "endpoints"}
    return render(request, "endpoints/list.html", context)


@login_required
def endpoint_create(request: HttpRequest) -> HttpResponse:
    project = require_current_project(request)
    check_role(project.member_role, Role.ADMIN)
    return _edit(request, Endpoint(project=project))


@login_required
def endpoint_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _edit(request, get_for_user(Endpoint, request.user, Role.ADMIN, pk=pk))


def _edit(request: HttpRequest, endpoint: Endpoint) -> HttpResponse:
    form = EndpointForm(request.POST or None, instance=endpoint)
    if request.method == "POST" and form.is_valid():
        endpoint = form.save()
        messages.success(request, f"Saved endpoint '{endpoint.name}'.")
        if form.forgot_secrets:
            messages.warning(
                request,
                "The base URL moved to another host: the key and extra headers stored for the old host "
                "were cleared (a key entered now is kept). Enter again what the new host needs.",
            )
        return redirect("ui:endpoint_edit", pk=endpoint.pk)
    context = {"form": form, "endpoint": endpoint, "nav": "endpoints"}
    return render(request, "endpoints/edit.html", context)


@login_required
@require_POST
def endpoint_test(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = get_for_user(Endpoint, request.user, Role.EDITOR, pk=pk)
    report = endpoint.test_connection()
    if report["ok"]:
        models = ", ".join(report["models"]) or "none listed"
        messages.success(
            request, f"Connected to '{endpoint.name}' in {report['latency_ms']:.0f} ms. Models: {models}."
        )
    else:
        messages.error(request, f"Could not connect to '{endpoint.name}': {report['error']}")
    if request.POST.get("next") == "list" or endpoint.member_role != Role.ADMIN:
        return redirect("ui:endpoint_list")
    return redirect("ui:endpoint_edit", pk=pk)
