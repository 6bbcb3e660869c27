"""GET /api/experiments/{id}/judge-agreement/: who judges, and how far the judge
agrees with the people who rated the same outputs."""

import math

import pytest

from engine.scorers.human import rating_to_score
from engine.sweep import config_key
from runs.models import Run, RunStatus, Score, ScoreSource
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db

ITEMS = [({"country": c}, c) for c in ("France", "Japan", "Peru", "Chile")]
# A hand-built table: per run, the judge and the people rate the four rows so.
# Ranks (1, 2.5, 2.5, 4) against (1, 3, 2, 4): Spearman rho = sqrt(0.9) = 0.9487,
# and five runs of it keep rho (ranks stay an affine map of the ratings).
JUDGE = [2, 5, 5, 8]
PEOPLE = [2, 6, 4, 8]
JUDGE_SCORER = {"type": "llm_judge", "name": "judge", "weight": 1.0, "config": {"endpoint": "judge-box"}}


def judge_experiment(judge=JUDGE_SCORER, **fields):
    make_endpoint("judge-box", default_model="qwen-judge")
    fields.setdefault("scorers", [judge, {"type": "human", "weight": 1.0}])
    return make_experiment(make_endpoint("ollama-alice", default_model="llama3.2"), items=ITEMS, **fields)


def make_run(experiment, n: int) -> Run:
    config = {"temperature": n / 10}
    return Run.objects.create(
        experiment=experiment, config=config, config_hash=config_key(config), status=RunStatus.COMPLETED
    )


def judged(run, item, rating, sample: int = 0) -> Score:
    value = None if rating is None else rating_to_score(rating)
    return Score.objects.create(run=run, item=item, sample_index=sample, scorer="judge", value=value)


def rated(run, item, rating, author) -> Score:
    return Score.objects.create(
        run=run,
        item=item,
        scorer="human",
        source=ScoreSource.HUMAN,
        value=rating_to_score(rating),
        author=author,
    )


def agreement_of(api, experiment) -> dict:
    response = api.get(f"/api/experiments/{experiment.pk}/judge-agreement/")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_hand_built_table_gives_its_known_spearman(api, alice):
    experiment = judge_experiment()
    items = list(experiment.items.order_by("position"))
    for n in range(5):
        run = make_run(experiment, n)
        for item, judge, people in zip(items, JUDGE, PEOPLE, strict=True):
            judged(run, item, judge)
            rated(run, item, people, alice)
    data = agreement_of(api, experiment)
    assert data["experiment"] == experiment.pk
    (judge,) = data["judges"]
    assert judge["scorer"] == "judge"
    assert judge["agreement"]["pairs"] == 20
    assert judge["agreement"]["spearman"] == pytest.approx(math.sqrt(0.9))
    assert judge["agreement"]["mean_abs_diff"] == pytest.approx(0.5)
    assert judge["agreement"]["verdict"] == "agrees well"


def test_only_outputs_rated_by_both_are_paired(api, alice, bob):
    experiment = judge_experiment()
    france, japan, peru, chile = experiment.items.order_by("position")
    run = make_run(experiment, 1)
    judged(run, france, 4, sample=0)
    judged(run, france, 6, sample=1)  # repeats: the judge's mean, 5
    rated(run, france, 5, alice)
    rated(run, france, 7, bob)  # raters: their mean, 6
    judged(run, japan, None)  # the judge could not rate it: nothing to compare
    rated(run, japan, 9, alice)
    judged(run, peru, 8)  # nobody rated it
    Score.objects.create(
        run=run, scorer="human", source=ScoreSource.HUMAN, value=1.0, author=alice
    )  # whole run
    agreement = agreement_of(api, experiment)["judges"][0]["agreement"]
    assert agreement == {
        "pairs": 1,
        "spearman": None,
        "mean_abs_diff": pytest.approx(1.0),
        "verdict": "too few ratings: 1 < 20",
    }


def test_the_endpoint_and_model_that_judge_are_named(api):
    experiment = judge_experiment()
    judge = agreement_of(api, experiment)["judges"][0]
    assert (judge["endpoint"], judge["model"], judge["samples"]) == ("judge-box", "qwen-judge", 1)
    assert judge["self_judging"] is False and judge["warning"] == ""


def test_a_model_judging_its_own_outputs_is_warned_about(api):
    own = {"type": "llm_judge", "name": "judge", "config": {"samples": 3}}
    judge = agreement_of(api, judge_experiment(own))["judges"][0]
    assert (judge["endpoint"], judge["model"], judge["samples"]) == ("ollama-alice", "llama3.2", 3)
    assert judge["self_judging"] is True
    assert judge["warning"].startswith("llama3.2 judges outputs it wrote itself (stage 'answer')")


def test_a_swept_model_that_also_judges_is_warned_about(api):
    experiment = judge_experiment(parameter_space={"answer.model": ["llama3.2", "qwen-judge"]})
    judge = agreement_of(api, experiment)["judges"][0]
    assert judge["model"] == "qwen-judge" and judge["self_judging"] is True


def test_rated_outputs_and_those_the_judge_could_not_rate_add_up_over_runs(api):
    experiment = judge_experiment()
    for n, (scored, errors, spread, outputs) in enumerate([(3, 1, 0.5, 3), (4, 0, 1.0, 1), (2, 2, None, 0)]):
        run = make_run(experiment, n)
        stats = {"scored": scored, "errors": errors, "mean_spread": spread, "spread_outputs": outputs}
        Run.objects.filter(pk=run.pk).update(scorer_stats={"judge": stats})
    judge = agreement_of(api, experiment)["judges"][0]
    assert (judge["rated"], judge["could_not_rate"]) == (9, 3)
    assert judge["mean_spread"] == pytest.approx((0.5 * 3 + 1.0 * 1) / 4)


def test_an_experiment_without_a_judge_has_none(api):
    experiment = make_experiment(make_endpoint())
    assert agreement_of(api, experiment) == {"experiment": experiment.pk, "judges": []}


def test_an_unknown_experiment_is_404(api):
    assert api.get("/api/experiments/999999/judge-agreement/").status_code == 404
