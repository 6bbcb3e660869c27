from typing import Any

from django.http import HttpRequest

from projects.models import Role, role_allows
from projects.views import current_project, my_projects


def projects(request: HttpRequest) -> dict[str, Any]:
    """The header's project switcher: the user's projects and the one in use, and what
    the user may do there (`can_edit`: editor or admin; `is_admin`). A page about one
    object asks the object instead (projects/templatetags/roles.py): it may belong
    to another of the user's projects."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    project = current_project(request)
    role = project.member_role if project else None
    return {
        "my_projects": my_projects(request),
        "current_project": project,
        "can_edit": role_allows(role, Role.EDITOR),
        "is_admin": role_allows(role, Role.ADMIN),
    }
