"""The one way to reach a project's objects: through the user's membership.

Each project-owned model names the path from its rows to their project in
`PROJECT_PATH` ("project", "experiment__project", ...). `visible()` keeps the rows
of the user's projects and annotates each with the user's role there; `get_for_user()`
fetches one row, answering 404 for anything outside the user's projects (as if it
did not exist) and 403 when the role is too low.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, OuterRef, QuerySet, Subquery
from django.shortcuts import get_object_or_404

from projects.models import Membership, Project, Role

M = TypeVar("M", bound=Model)


def project_path(model: type[Model]) -> str:
    return "" if model is Project else model.PROJECT_PATH


def visible(queryset: QuerySet[M], user: Any) -> QuerySet[M]:
    """The rows of `queryset` in the user's projects, each with `member_role`."""
    if not getattr(user, "is_authenticated", False):
        return queryset.none()
    path = project_path(queryset.model)
    prefix = f"{path}__" if path else ""
    role = Membership.objects.filter(user=user, project=OuterRef(path or "pk")).values("role")[:1]
    # One membership per (user, project): the join cannot repeat a row.
    return queryset.filter(**{f"{prefix}memberships__user": user}).annotate(member_role=Subquery(role))


def check_role(actual: str | None, required: str) -> None:
    if actual is None or not Role(actual).allows(required):
        raise PermissionDenied(
            f"This needs the {required} role in the project; you are {actual or 'not a member'}."
        )


def get_for_user(queryset: QuerySet[M] | type[M], user: Any, role: str = Role.VIEWER, **lookup: Any) -> M:
    """One object of the user's projects: 404 outside them, 403 below `role`."""
    if not isinstance(queryset, QuerySet):
        queryset = queryset._default_manager.all()
    obj = get_object_or_404(visible(queryset, user), **lookup)
    check_role(obj.member_role, role)
    return obj
