"""Plain `make_*` helpers that build valid rows with sensible defaults."""

from typing import Any

from django.contrib.auth.models import User

from endpoints.models import Endpoint
from experiments.models import DatasetItem, Experiment
from projects.models import Membership, Project, Role

TEAM = "Team"  # the project the named test users share unless a test says otherwise

CAPITALS = [
    ({"country": "France", "capital": "Paris"}, "Paris is the capital of France."),
    ({"country": "Japan", "capital": "Tokyo"}, "Tokyo is the capital of Japan."),
    ({"country": "Peru", "capital": "Lima"}, "Lima is the capital of Peru."),
]


def make_user(username: str = "alice", superuser: bool = False) -> User:
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.com", "pw-" + username)
    return User.objects.create_user(username, f"{username}@example.com", "pw-" + username)


def team_project() -> Project:
    """The shared test project (created on first use)."""
    return Project.objects.filter(name=TEAM).first() or Project.objects.create(name=TEAM)


def make_project(name: str = TEAM, **members: str) -> Project:
    """A project with members given as username=role (users are created as needed)."""
    project = team_project() if name == TEAM else Project.objects.create(name=name)
    for username, role in members.items():
        user = User.objects.filter(username=username).first() or make_user(username)
        add_member(project, user, role)
    return project


def add_member(project: Project, user: User, role: str = Role.EDITOR) -> Membership:
    membership, _ = Membership.objects.update_or_create(user=user, project=project, defaults={"role": role})
    return membership


def make_endpoint(
    name: str = "local",
    base_url: str = "http://127.0.0.1:9/v1",
    api_key: str = "",
    extra_headers: dict | None = None,
    **fields: Any,
) -> Endpoint:
    fields.setdefault("default_model", "stub-small")
    fields.setdefault("project", team_project())
    endpoint = Endpoint(name=name, base_url=base_url, **fields)
    endpoint.set_api_key(api_key)
    endpoint.set_extra_headers(extra_headers or {})
    endpoint.save()
    return endpoint


def make_experiment(endpoint: Endpoint | None = None, items: list | None = None, **fields: Any) -> Experiment:
    fields.setdefault("name", "Capitals")
    fields.setdefault(
        "pipeline",
        [{"name": "answer", "system": "Be brief.", "user": "What is the capital of {{ country }}?"}],
    )
    fields.setdefault("parameter_space", {"temperature": [0.0, 0.7]})
    fields.setdefault(
        "scorers", [{"type": "keyword", "weight": 1.0, "config": {"required_present": ["{{ capital }}"]}}]
    )
    fields.setdefault("project", endpoint.project if endpoint else team_project())
    experiment = Experiment(endpoint=endpoint, **fields)
    experiment.full_clean()
    experiment.save()
    rows = CAPITALS if items is None else items
    DatasetItem.objects.bulk_create(
        DatasetItem(experiment=experiment, position=i, input=inp, reference=ref)
        for i, (inp, ref) in enumerate(rows)
    )
    return experiment
