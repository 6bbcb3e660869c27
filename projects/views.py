"""Project pages: the list (and creating one), the switcher, and members for admins."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from projects.access import get_for_user, visible
from projects.forms import AddMemberForm, ChangeMemberForm, ProjectForm
from projects.models import AlreadyMember, LastAdmin, Project, Role

SESSION_KEY = "project_id"


def my_projects(request: HttpRequest) -> list[Project]:
    """The user's projects with their role (`member_role`), read once per request."""
    if not hasattr(request, "_my_projects"):
        request._my_projects = list(visible(Project.objects.order_by("name", "id"), request.user))
    return request._my_projects


def current_project(request: HttpRequest) -> Project | None:
    """The project the switcher shows: the one chosen last, else the user's first."""
    projects = my_projects(request)
    chosen = request.session.get(SESSION_KEY)
    return next((p for p in projects if p.pk == chosen), projects[0] if projects else None)


def use_project(request: HttpRequest, project: Project) -> None:
    request.session[SESSION_KEY] = project.pk


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = Project.create_for(request.user, form.cleaned_data["name"])
        use_project(request, project)
        messages.success(request, f"Created project '{project.name}'; you are its admin.")
        return redirect("ui:dashboard")
    context = {"projects": my_projects(request), "form": form, "nav": "projects"}
    return render(request, "projects/list.html", context)


@login_required
@require_POST
def switch_project(request: HttpRequest) -> HttpResponse:
    pk = request.POST.get("project", "")
    project = get_for_user(Project, request.user, pk=pk if pk.isdigit() else 0)
    use_project(request, project)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return redirect(target)


@login_required
def members(request: HttpRequest, pk: int) -> HttpResponse:
    project = get_for_user(Project, request.user, Role.ADMIN, pk=pk)
    form = AddMemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.cleaned_data["username"]
        try:
            project.add_member(user, form.cleaned_data["role"])
        except AlreadyMember as error:
            form.add_error("username", str(error))
        else:
            messages.success(request, f"Added {user.username} as {form.cleaned_data['role']}.")
            return redirect("ui:members", pk=pk)
    context = {
        "project": project,
        "memberships": project.memberships.select_related("user").order_by("user__username"),
        "form": form,
        "roles": Role.choices,
        "nav": "projects",
    }
    return render(request, "projects/members.html", context)


@login_required
@require_POST
def member_change(request: HttpRequest, pk: int, user_id: int) -> HttpResponse:
    project = get_for_user(Project, request.user, Role.ADMIN, pk=pk)
    membership = project.memberships.select_related("user").filter(user_id=user_id).first()
    form = ChangeMemberForm(request.POST)
    if membership is None or not form.is_valid():
        messages.error(request, "No such member, or no change given.")
        return redirect("ui:members", pk=pk)
    role = form.cleaned_data["role"]
    name = membership.user.username
    try:
        if form.cleaned_data["remove"]:
            membership.remove()
            messages.success(request, f"Removed {name} from the project.")
        elif role:
            membership.change_role(role)
            messages.success(request, f"{name} is now {role}.")
    except LastAdmin as error:
        messages.error(request, str(error))
    return redirect("ui:members", pk=pk)


def require_current_project(request: HttpRequest) -> Project:
    """The project new things go into; without one, there is nothing to add to."""
    project = current_project(request)
    if project is None:
        raise Http404("You are in no project yet: create one on the Projects page.")
    return project
