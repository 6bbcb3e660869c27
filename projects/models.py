"""Projects and who may do what in them.

Everything a team makes (endpoints, experiments, webhooks) belongs to a project;
datasets, sweeps, runs, scores and events follow their experiment. A person sees
a project only through a Membership, whose role says what they may do there.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, models, transaction


class Role(models.TextChoices):
    VIEWER = "viewer"  # reads leaderboards, runs, reports, exports
    EDITOR = "editor"  # also edits experiments and datasets, runs sweeps, rates
    ADMIN = "admin"  # also manages endpoints (keys), webhooks and members

    @property
    def rank(self) -> int:
        return ROLE_RANK[self.value]

    def allows(self, required: str) -> bool:
        return self.rank >= ROLE_RANK[required]


ROLE_RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.ADMIN: 2}


def role_allows(role: str | None, required: str) -> bool:
    """Whether `role` (None: not a member) is at least `required`."""
    return role is not None and Role(role).allows(required)


class MembershipError(Exception):
    """A change to a project's members that its rules refuse; the message says what to do."""


class NoSuchUser(MembershipError):
    pass


class AlreadyMember(MembershipError):
    pass


class LastAdmin(MembershipError):
    pass


def user_named(username: str) -> Any:
    """The account called `username`: members are added by name, from the accounts that exist."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NoSuchUser(f"No user named '{username}'; an administrator creates accounts.")
    return user


def new_cache_namespace() -> str:
    return secrets.token_hex(16)


class Project(models.Model):
    name = models.CharField(max_length=200)
    # Mixed into every response-cache key of the project's calls, so one team cannot
    # learn another's outputs by sending the same prompt. "" is the namespace shared
    # by everything cached before projects existed (the "Default" project keeps it).
    cache_namespace = models.CharField(max_length=64, blank=True, default=new_cache_namespace, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    @transaction.atomic
    def create_for(cls, user: Any, name: str) -> Project:
        """Any logged-in user may create a project, and becomes its admin."""
        project = cls.objects.create(name=name)
        project.memberships.create(user=user, role=Role.ADMIN)
        return project

    def role_of(self, user: Any) -> Role | None:
        if not getattr(user, "is_authenticated", False):
            return None
        role = self.memberships.filter(user=user).values_list("role", flat=True).first()
        return Role(role) if role else None

    def effective_cache_namespace(self) -> str:
        return "" if settings.CACHE_SHARED_ACROSS_PROJECTS else self.cache_namespace

    def add_member(self, user: Any, role: str) -> Membership:
        """Make `user` a member; AlreadyMember if they are one (also when two adds race)."""
        try:
            with transaction.atomic():
                return self.memberships.create(user=user, role=role)
        except IntegrityError:
            if not self.memberships.filter(user=user).exists():
                raise
            raise AlreadyMember(f"{user.username} is already a member; change their role instead.") from None


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "project"], name="membership_once_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.project}"

    @transaction.atomic
    def change_role(self, role: str) -> None:
        if role != Role.ADMIN:
            self._refuse_last_admin("demote")
        self.role = role
        self.save(update_fields=["role"])

    @transaction.atomic
    def remove(self) -> None:
        self._refuse_last_admin("remove")
        self.delete()

    def _refuse_last_admin(self, verb: str) -> None:
        """A project keeps at least one admin. The project's admin rows are locked while
        counting, so two admins demoting (or removing) each other at once cannot both pass:
        the second waits for the first and then counts what it left."""
        admins = list(
            Membership.objects.select_for_update()
            .filter(project_id=self.project_id, role=Role.ADMIN)
            .values_list("pk", flat=True)
        )
        if admins == [self.pk]:
            raise LastAdmin(
                f"The project needs an admin: make someone else admin first, then {verb} this one."
            )
