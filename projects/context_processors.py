from typing import Any

from django.http import HttpRequest

from projects.views import current_project, my_projects


def projects(request: HttpRequest) -> dict[str, Any]:
    """The header's project switcher: the user's projects and the one in use."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"my_projects": my_projects(request), "current_project": current_project(request)}
