"""Endpoint pages: list, add, edit (the key is write-only) and test the connection."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from endpoints.api import test_connection
from endpoints.forms import EndpointForm
from endpoints.models import Endpoint


@login_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    endpoints = Endpoint.objects.all()
    return render(request, "endpoints/list.html", {"endpoints": endpoints, "nav": "endpoints"})


@login_required
def endpoint_create(request: HttpRequest) -> HttpResponse:
    return _edit(request, Endpoint())


@login_required
def endpoint_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _edit(request, get_object_or_404(Endpoint, pk=pk))


def _edit(request: HttpRequest, endpoint: Endpoint) -> HttpResponse:
    form = EndpointForm(request.POST or None, instance=endpoint)
    if request.method == "POST" and form.is_valid():
        endpoint = form.save()
        messages.success(request, f"Saved endpoint '{endpoint.name}'.")
        return redirect("ui:endpoint_edit", pk=endpoint.pk)
    context = {"form": form, "endpoint": endpoint, "nav": "endpoints"}
    return render(request, "endpoints/edit.html", context)


@login_required
@require_POST
def endpoint_test(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = get_object_or_404(Endpoint, pk=pk)
    report = test_connection(endpoint)
    if report["ok"]:
        models = ", ".join(report["models"]) or "none listed"
        messages.success(
            request, f"Connected to '{endpoint.name}' in {report['latency_ms']:.0f} ms. Models: {models}."
        )
    else:
        messages.error(request, f"Could not connect to '{endpoint.name}': {report['error']}")
    if request.POST.get("next") == "list":
        return redirect("ui:endpoint_list")
    return redirect("ui:endpoint_edit", pk=pk)
