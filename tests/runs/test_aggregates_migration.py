"""An installation from before the stored aggregates (runs 0004, experiments 0003)
with completed, scored runs upgrades in one `migrate`: the backfill runs once every
app's tables are as the summary code reads them (it crashed on experiments' later
columns when it ran inside runs 0005)."""

import pytest

from tests.runs.test_sweep_migration import migrate, migrate_to_the_end

BEFORE = [("experiments", "0003_alter_experiment_project"), ("runs", "0004_racing")]


@pytest.mark.django_db(transaction=True)
def test_completed_runs_from_before_get_their_aggregates_on_upgrade():
    old = migrate(BEFORE)
    project = old.get_model("projects", "Project").objects.create(name="Team")
    experiment = old.get_model("experiments", "Experiment").objects.create(
        name="Before",
        project=project,
        pipeline=[{"name": "a", "user": "{{ q }}"}],
        scorers=[{"type": "keyword", "weight": 1, "config": {}}],
    )
    items = [
        old.get_model("experiments", "DatasetItem").objects.create(
            experiment=experiment, position=n, input={"q": n}
        )
        for n in range(2)
    ]
    run = old.get_model("runs", "Run").objects.create(
        experiment=experiment, config={}, config_hash="a" * 64, status="completed", weighted_score=0.5
    )
    Score = old.get_model("runs", "Score")
    for item, value in zip(items, (1.0, 0.0), strict=True):
        Score.objects.create(run=run, item=item, scorer="keyword", value=value, source="auto")

    migrate_to_the_end()

    from runs.models import Run

    upgraded = Run.objects.get(pk=run.pk)
    assert upgraded.n_items == 2 and upgraded.is_latest
    assert upgraded.scorer_means == {"keyword": 0.5}
    assert upgraded.item_scores == {str(items[0].pk): 1.0, str(items[1].pk): 0.0}
