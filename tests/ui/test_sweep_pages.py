"""The live sweep view, its JSON rows and its pause / resume / stop buttons."""

import pytest
from django.urls import reverse

from endpoints.models import Endpoint
from runs.models import Run, RunStatus, Sweep, SweepStatus
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db


def make_sweep(status: str = SweepStatus.RUNNING) -> Sweep:
    endpoint = Endpoint.objects.first() or make_endpoint()
    experiment = make_experiment(endpoint)
    sweep = Sweep.objects.create(
        experiment=experiment,
        status=status,
        total_runs=4,
        completed_runs=2,
        failed_runs=1,
        tokens_used=250,
        token_budget=1000,
    )
    for n, (temperature, state, score) in enumerate(
        [
            (0.0, RunStatus.COMPLETED, 0.9),
            (0.5, RunStatus.COMPLETED, 0.4),
            (1.0, RunStatus.FAILED, None),
            (1.5, RunStatus.PENDING, None),
        ]
    ):
        Run.objects.create(
            experiment=experiment,
            sweep=sweep,
            config={"temperature": temperature, "model": "stub-small"},
            config_hash=f"{n:064d}",
            status=state,
            weighted_score=score,
            tokens_in=40,
            tokens_out=10,
            error="HTTP 500 from the stub" if state == RunStatus.FAILED else "",
        )
    return sweep


def test_the_live_view_shows_progress_counts_and_tokens(client):
    sweep = make_sweep()
    content = client.get(reverse("ui:sweep", args=[sweep.pk])).content.decode()
    assert '<progress id="sweep-progress" max="4" value="3"' in content
    assert '<span class="pct" id="progress-pct">75%</span>' in content
    assert '<dd id="count-remaining">1</dd>' in content
    assert (
        '<span id="tokens-used">250</span>' in content and '<span id="token-budget">1,000</span>' in content
    )
    assert f'data-ws-path="/ws/experiments/{sweep.experiment_id}/"' in content


def test_finished_runs_are_listed_best_marked_with_only_the_varying_parameters(client):
    sweep = make_sweep()
    response = client.get(reverse("ui:sweep", args=[sweep.pk]))
    assert response.context["varying"] == ["temperature"]
    rows = response.context["rows"]
    assert len(rows) == 3 and all(set(r["config"]) == {"temperature"} for r in rows)
    best = Run.objects.get(sweep=sweep, weighted_score=0.9)
    assert f'<tr data-run="{best.pk}" class="best">' in response.content.decode()


def test_the_buttons_match_the_state(client):
    running = client.get(reverse("ui:sweep", args=[make_sweep().pk])).content.decode()
    assert 'data-action="pause">' in running and 'data-action="resume" disabled>' in running
    paused = client.get(reverse("ui:sweep", args=[make_sweep(SweepStatus.PAUSED).pk])).content.decode()
    assert 'data-action="pause" disabled>' in paused and 'data-action="resume">' in paused
    done = client.get(reverse("ui:sweep", args=[make_sweep(SweepStatus.COMPLETED).pk])).content.decode()
    assert done.count(" disabled>") == 3 and 'id="finished-links" class=""' in done
    assert 'class="actions hidden" id="sweep-controls"' in done  # a finished sweep hides its controls


def test_the_page_counts_calls_and_labels_every_bar(client):
    sweep = make_sweep()
    sweep.estimate, sweep.calls_done = {"calls": 2400}, 1098
    sweep.save()
    content = client.get(reverse("ui:sweep", args=[sweep.pk])).content.decode()
    assert '<progress id="call-progress" max="2400" value="1098"></progress>' in content
    assert (
        'Calls answered: <span id="calls-done">1,098</span> of <span id="total-calls">2,400</span>' in content
    )
    assert content.count("<progress id=") == content.count('<label class="progress-label" for=') == 3


def test_rows_carry_their_cells_as_the_page_shows_them(client):
    sweep = make_sweep()
    Run.objects.filter(sweep=sweep).update(tokens_in=2148, latency_ms=1234.4)
    content = client.get(reverse("ui:sweep", args=[sweep.pk])).content.decode()
    rows = client.get(reverse("ui:sweep_runs", args=[sweep.pk]), {"keys": "temperature"}).json()["runs"]
    best = next(r for r in rows if r["weighted_score"] == 0.9)
    shown = {
        "score": "0.900",
        "config": ["0.0"],
        "tokens": "2,158",
        "latency": "1,234 ms",
        "cost": "0.00 USD",
    }
    assert best["shown"] == shown
    for text in best["shown"].values():
        for value in [text] if isinstance(text, str) else text:
            assert value in content


def test_runs_json_returns_the_runs_named_by_events(client):
    sweep = make_sweep()
    ids = list(Run.objects.filter(sweep=sweep).order_by("pk").values_list("pk", flat=True))
    url = reverse("ui:sweep_runs", args=[sweep.pk])
    data = client.get(url, {"ids": f"{ids[0]},{ids[2]},{ids[3]}", "keys": "temperature"}).json()
    # The pending run is not finished: it is left out until its event comes.
    assert sorted(r["id"] for r in data["runs"]) == [ids[0], ids[2]]
    failed = next(r for r in data["runs"] if r["id"] == ids[2])
    assert failed == {
        "id": ids[2],
        "url": f"/runs/{ids[2]}/",
        "status": "failed",
        "weighted_score": None,
        "score_spread": None,
        "tokens": 50,
        "latency_ms": 0.0,
        "config": {"temperature": 1.0},
        "error": "HTTP 500 from the stub",
        "eliminated_after": None,
        "shown": {"score": "—", "config": ["1.0"], "tokens": "50", "latency": "0 ms", "cost": "0.00 USD"},
    }
    assert client.get(url, {"ids": "1,x"}).status_code == 400


def test_runs_json_only_serves_its_own_sweep(client):
    sweep, other = make_sweep(), make_sweep()
    foreign = Run.objects.filter(sweep=other).first()
    data = client.get(reverse("ui:sweep_runs", args=[sweep.pk]), {"ids": str(foreign.pk)}).json()
    assert data == {"runs": []}


def test_pause_resume_and_stop_change_the_state(client):
    sweep = make_sweep()
    response = client.post(reverse("ui:sweep_control", args=[sweep.pk, "pause"]), follow=True)
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.PAUSED and b"is paused" in response.content
    client.post(reverse("ui:sweep_control", args=[sweep.pk, "stop"]))
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.STOPPED


def test_an_impossible_transition_is_explained(client):
    sweep = make_sweep(SweepStatus.COMPLETED)
    response = client.post(reverse("ui:sweep_control", args=[sweep.pk, "resume"]), follow=True)
    assert b"is completed; it cannot become running" in response.content


def racing_sweep() -> Sweep:
    """Round 1 on 10 rows dropped the two weaker of four candidates; round 2 is under way."""
    sweep = make_sweep()
    runs = list(Run.objects.filter(sweep=sweep).order_by("pk"))
    Run.objects.filter(pk=runs[1].pk).update(eliminated_after=10)
    Run.objects.filter(pk=runs[2].pk).update(eliminated_after=10, status=RunStatus.COMPLETED)
    sweep.type = "racing"
    sweep.race = {
        "schedule": [10, 20, 40],
        "rows_total": 40,
        "rows": 20,
        "confidence": 0.95,
        "alpha": 0.05 / 6,
        "calls_per_row": 1,
        "grid_calls": 160,
        "rounds": [
            {
                "round": 1,
                "rows": 10,
                "candidates": 4,
                "leader": runs[0].pk,
                "eliminated": [runs[1].pk, runs[2].pk],
                "survivors": 2,
            },
            {"round": 2, "rows": 20, "candidates": 2},
        ],
        "finished": False,
    }
    sweep.save()
    return sweep


def test_a_race_shows_its_rounds_eliminations_and_calls_saved(client):
    sweep = racing_sweep()
    content = client.get(reverse("ui:sweep", args=[sweep.pk])).content.decode()
    assert '<span id="race-round">2</span> on <span id="race-rows">20</span> of 40 rows' in content
    assert '<span id="race-candidates">2</span> candidates left' in content
    # 4 candidates on 10 rows, then 2 on 10 more: 60 calls of the grid's 160.
    assert '<span id="race-calls">60</span>' in content and '<span id="race-saved">100</span>' in content
    assert content.count('<tr data-round="') == 2 and "Rows 10 → 20 → 40" in content
    assert content.count("dropped at 10 rows") == 2


def test_a_grid_has_no_race_card(client):
    content = client.get(reverse("ui:sweep", args=[make_sweep().pk])).content.decode()
    assert 'id="race"' not in content
