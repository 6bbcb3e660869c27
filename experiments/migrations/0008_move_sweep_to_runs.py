"""Sweep now lives in runs (runs/migrations/0006_sweep.py): only the state forgets it here."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0007_experiment_sweep_defaults"),
        ("runs", "0006_sweep"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Sweep")],
            database_operations=[],
        ),
    ]
