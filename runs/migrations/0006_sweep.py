"""Sweep moves from experiments to runs, next to the runs it drives.

Only Django's idea of where the model lives changes: the table keeps its name
(`experiments_sweep`), its index and its constraint, so no row is touched. The
content type row is relabelled, so the permissions granted on sweeps and the
admin's history of them stay attached."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def relabel(source: str, target: str):
    def run(apps, schema_editor) -> None:
        ContentType = apps.get_model("contenttypes", "ContentType")
        types = ContentType.objects.using(schema_editor.connection.alias)
        if not types.filter(app_label=source, model="sweep").exists():
            return
        # A row made for the target in between holds nothing granted yet: the old one wins.
        types.filter(app_label=target, model="sweep").delete()
        types.filter(app_label=source, model="sweep").update(app_label=target)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("experiments", "0007_experiment_sweep_defaults"),
        ("runs", "0005_run_aggregates"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Sweep",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "type",
                            models.CharField(
                                choices=[
                                    ("grid", "Grid"),
                                    ("random", "Random"),
                                    ("guided", "Guided"),
                                    ("racing", "Racing"),
                                ],
                                default="grid",
                                max_length=10,
                            ),
                        ),
                        ("config", models.JSONField(blank=True, default=dict)),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("pending", "Pending"),
                                    ("running", "Running"),
                                    ("paused", "Paused"),
                                    ("stopping", "Stopping"),
                                    ("stopped", "Stopped"),
                                    ("completed", "Completed"),
                                    ("failed", "Failed"),
                                    ("budget_exhausted", "Budget Exhausted"),
                                ],
                                db_index=True,
                                default="pending",
                                max_length=20,
                            ),
                        ),
                        ("max_concurrent", models.PositiveIntegerField(default=8)),
                        ("token_budget", models.BigIntegerField(default=1000000)),
                        ("tokens_used", models.BigIntegerField(default=0)),
                        (
                            "calls_done",
                            models.BigIntegerField(
                                default=0,
                                help_text="LLM calls answered so far, cache hits and failures included "
                                "(of estimate.calls); a resumed sweep's replayed calls count again.",
                            ),
                        ),
                        ("progress_at", models.DateTimeField(blank=True, null=True)),
                        ("estimate", models.JSONField(blank=True, default=dict)),
                        ("race", models.JSONField(blank=True, default=dict)),
                        ("total_runs", models.PositiveIntegerField(default=0)),
                        ("completed_runs", models.PositiveIntegerField(default=0)),
                        ("failed_runs", models.PositiveIntegerField(default=0)),
                        ("cancelled_runs", models.PositiveIntegerField(default=0)),
                        ("error", models.TextField(blank=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="sweeps",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "experiment",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="sweeps",
                                to="experiments.experiment",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "experiments_sweep",
                        "ordering": ["-created_at"],
                        "indexes": [
                            models.Index(
                                fields=["experiment", "status"], name="experiments_experim_7fd31e_idx"
                            )
                        ],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("tokens_used__gte", 0)), name="sweep_tokens_nonnegative"
                            )
                        ],
                    },
                ),
                migrations.AlterField(
                    model_name="run",
                    name="sweep",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="runs.sweep",
                    ),
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel("experiments", "runs"), relabel("runs", "experiments")),
    ]
