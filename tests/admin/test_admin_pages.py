import pytest
from django.contrib import admin
from django.urls import reverse

from endpoints.models import Endpoint
from runs.models import ResponseCache, Run, Score, StageResult, Sweep
from tests.factories import make_endpoint, make_experiment, team_project
from webhooks.models import Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db

SECRET = "sk-admin-never-shown-123"
PROJECT_APPS = {"endpoints", "experiments", "runs", "webhooks"}


@pytest.fixture
def populated(alice):
    endpoint = make_endpoint(api_key=SECRET)
    experiment = make_experiment(endpoint, created_by=alice)
    item = experiment.items.first()
    sweep = Sweep.objects.create(experiment=experiment, total_runs=1)
    run = Run.objects.create(
        experiment=experiment,
        sweep=sweep,
        config={"temperature": 0.0},
        config_hash="a" * 64,
        weighted_score=0.5,
    )
    StageResult.objects.create(
        run=run,
        item=item,
        stage_index=0,
        stage_name="answer",
        user_prompt="q",
        output="Paris",
        config_hash="b" * 64,
    )
    Score.objects.create(run=run, item=item, scorer="keyword", value=1.0)
    ResponseCache.objects.create(config_hash="b" * 64, response_text="Paris")
    hook = Webhook.objects.create(
        project=team_project(), url="https://example.com/hook", events=["sweep.completed"]
    )
    WebhookDelivery.objects.create(webhook=hook, event="sweep.completed", payload={"sweep": sweep.id})
    return experiment


def admin_urls_for_all_models(include_change_pages: bool):
    for model in admin.site._registry:
        meta = model._meta
        if meta.app_label not in PROJECT_APPS:
            continue
        yield reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        yield reverse(f"admin:{meta.app_label}_{meta.model_name}_add")
        if include_change_pages:
            for obj in model.objects.all()[:1]:
                yield reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def test_every_project_model_is_registered():
    registered = set(admin.site._registry)
    for model in (Endpoint, Sweep, Run, StageResult, Score, ResponseCache, Webhook, WebhookDelivery):
        assert model in registered


def test_every_changelist_add_and_change_page_loads(client, alice, populated):
    client.force_login(alice)
    urls = list(admin_urls_for_all_models(include_change_pages=True))
    assert len(urls) > 25
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert SECRET.encode() not in response.content, url


def test_changelist_search_and_filters_work(client, alice, populated):
    client.force_login(alice)
    response = client.get(reverse("admin:runs_run_changelist"), {"status": "pending", "q": "aaaa"})
    assert response.status_code == 200
    response = client.get(reverse("admin:experiments_experiment_changelist"), {"q": "Capitals"})
    assert b"Capitals" in response.content


def test_admin_sets_a_new_key_and_keeps_it_when_left_blank(client, alice):
    client.force_login(alice)
    form = {
        "name": "openai",
        "base_url": "https://api.example.com/v1",
        "adapter": "openai",
        "timeout_s": "30",
        "max_concurrency": "0",
        "api_key": SECRET,
        "project": team_project().pk,
    }
    response = client.post(reverse("admin:endpoints_endpoint_add"), form)
    assert response.status_code == 302
    endpoint = Endpoint.objects.get(name="openai")
    assert endpoint.get_api_key() == SECRET
    form.update(api_key="", default_model="gpt-4o-mini")
    client.post(reverse("admin:endpoints_endpoint_change", args=[endpoint.pk]), form)
    endpoint.refresh_from_db()
    assert endpoint.default_model == "gpt-4o-mini"
    assert endpoint.get_api_key() == SECRET


def test_admin_refuses_anonymous_users(client, populated):
    response = client.get(reverse("admin:runs_run_changelist"))
    assert response.status_code == 302
