"""Existing data moves into a project "Default" whose members are all existing users:
admins for superusers, editors for the rest. Nothing is lost. The Default project
keeps the cache namespace "" of the answers cached before projects existed, so they
still answer its calls."""

from django.conf import settings
from django.db import migrations

OWNED = [("endpoints", "Endpoint"), ("experiments", "Experiment"), ("webhooks", "Webhook")]


def move_into_default(apps, schema_editor):
    Project = apps.get_model("projects", "Project")
    Membership = apps.get_model("projects", "Membership")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    ResponseCache = apps.get_model("runs", "ResponseCache")
    owned = [apps.get_model(app, name) for app, name in OWNED]
    if not User.objects.exists() and not any(m.objects.exists() for m in owned):
        return  # a new installation: nothing to move
    project = Project.objects.create(name="Default", cache_namespace="")
    Membership.objects.bulk_create(
        Membership(user_id=pk, project=project, role="admin" if superuser else "editor")
        for pk, superuser in User.objects.values_list("pk", "is_superuser")
    )
    for model in owned:
        model.objects.filter(project__isnull=True).update(project=project)
    ResponseCache.objects.filter(project__isnull=True).update(project=project)


def back_out_of_default(apps, schema_editor):
    Project = apps.get_model("projects", "Project")
    Project.objects.filter(name="Default", cache_namespace="").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0001_initial"),
        ("endpoints", "0002_endpoint_extra_header_names_and_more"),
        ("experiments", "0002_experiment_project"),
        ("webhooks", "0002_webhook_project"),
        ("runs", "0002_responsecache_project"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(move_into_default, back_out_of_default)]
