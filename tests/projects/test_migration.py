"""The projects migration on a database holding data from before it: everything moves
into "Default", every user becomes a member, header values get encrypted, and the
answers cached before still answer the Default project's calls."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from engine.cache import compute_config_hash

BEFORE = [
    ("endpoints", "0001_initial"),
    ("experiments", "0001_initial"),
    ("runs", "0001_initial"),
    ("webhooks", "0001_initial"),
    ("projects", None),
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([t for t in targets if t[1]]).apps


@pytest.mark.django_db(transaction=True)
def test_existing_data_moves_into_default_and_nothing_is_lost():
    old = migrate(BEFORE)
    User = old.get_model("auth", "User")
    root = User.objects.create(username="root", is_superuser=True, is_staff=True)
    ann = User.objects.create(username="ann")
    endpoint = old.get_model("endpoints", "Endpoint").objects.create(
        name="vllm", base_url="http://10.0.0.7:8000/v1", extra_headers={"X-Org": "research-secret"}
    )
    experiment = old.get_model("experiments", "Experiment").objects.create(
        name="Old experiment", endpoint_id=endpoint.pk, pipeline=[{"name": "a", "user": "hi"}]
    )
    old.get_model("webhooks", "Webhook").objects.create(url="https://hooks.example.com/x", secret="s" * 32)
    key = compute_config_hash(
        [{"role": "user", "content": "hi"}], "m", {}, None, endpoint_url=endpoint.base_url
    )
    old.get_model("runs", "ResponseCache").objects.create(config_hash=key, response_text="hello")

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    from endpoints.models import Endpoint
    from experiments.models import Experiment
    from projects.models import Project
    from runs.models import ResponseCache
    from webhooks.models import Webhook

    default = Project.objects.get()
    assert default.name == "Default" and default.cache_namespace == ""
    roles = dict(default.memberships.values_list("user__username", "role"))
    assert roles == {"root": "admin", "ann": "editor"}
    assert Experiment.objects.get(pk=experiment.pk).project == default
    assert Webhook.objects.get().project == default
    moved = Endpoint.objects.get(pk=endpoint.pk)
    assert moved.project == default and moved.extra_header_names == ["X-Org"]
    assert "research-secret" not in moved.extra_headers_encrypted
    assert moved.get_extra_headers() == {"X-Org": "research-secret"}
    # The Default project's calls still find what was cached before projects existed.
    config = moved.engine_config(with_key=False)
    from engine.gateway import call_hash

    assert call_hash(config, [{"role": "user", "content": "hi"}], "m", {}, 0) == key
    assert ResponseCache.objects.get(config_hash=key).project == default
    assert {u.pk for u in (root, ann)} == set(default.memberships.values_list("user_id", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_new_installation_gets_no_default_project():
    migrate(BEFORE)
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    from projects.models import Project

    assert not Project.objects.exists()
