"""What a page may offer, from the role on the object shown: `{% load roles %}`, then
`{% if experiment|can_edit %}` or `{% if project|is_admin %}` (any object that
`visible()` annotated with `member_role`). The header uses the context processor's
`can_edit` / `is_admin`, the same rule for the project in use."""

from typing import Any

from django import template

from projects.models import Role, role_allows

register = template.Library()


@register.filter
def can_edit(obj: Any) -> bool:
    return role_allows(getattr(obj, "member_role", None), Role.EDITOR)


@register.filter
def is_admin(obj: Any) -> bool:
    return role_allows(getattr(obj, "member_role", None), Role.ADMIN)
