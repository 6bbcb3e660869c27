from django.db import migrations

CHUNK = 500


def backfill(apps, schema_editor):
    """Store the aggregates (runs/aggregates.py) of the runs completed before they
    existed. The app's own summary code, so that stored and fresh figures are the same
    by construction; which is why this runs after the last migration of every app it
    reads (it ran in 0005 before, when experiments' later columns did not exist yet).
    A run already summarized (a database upgraded through 0005) is left alone."""
    from runs.aggregates import summarize_many

    Run = apps.get_model("runs", "Run")
    last = 0
    while True:
        todo = Run.objects.filter(id__gt=last, status="completed", n_items=0, is_latest=False)
        ids = list(todo.order_by("id").values_list("id", flat=True)[:CHUNK])
        if not ids:
            return
        summarize_many(dict.fromkeys(ids))
        last = ids[-1]


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0005_endpoint_extra_params"),
        ("experiments", "0008_move_sweep_to_runs"),
        ("projects", "0002_default_project"),
        ("runs", "0006_sweep"),
        ("webhooks", "0003_alter_webhook_project"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
