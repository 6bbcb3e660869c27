"""The whole loop through the API alone, against the loopback LLM stub:
endpoint → experiment → grid sweep → leaderboard → export → report."""

import io
import json
import time

import pytest
import yaml
from dotenv import dotenv_values

from runs.export import from_env
from tests.runs.sweep_helpers import quality_responder

TERSE = "Terse: capital of {{ country }}"
SPACE = {
    "temperature": [0.0, 0.5, 1.0],
    "answer.user": [TERSE, "Please tell me the capital of {{ country }}"],
}
SCORERS = [
    {"type": "keyword", "weight": 1, "config": {"required_present": ["{{ capital }}"]}},
    {
        "type": "format",
        "name": "length",
        "weight": 1,
        "config": {"check": "length", "min_tokens": 1, "max_tokens": 3},
    },
]
DATASET = [
    {"input": {"country": "France", "capital": "Paris"}, "reference": "Paris"},
    {"input": {"country": "Japan", "capital": "Tokyo"}, "reference": "Tokyo"},
    {"input": {"country": "Peru", "capital": "Lima"}, "reference": "Lima"},
]


def ok(response, status=200):
    assert response.status_code == status, (response.status_code, response.content[:500])
    return response


def wait_for(api, sweep_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep = ok(api.get(f"/api/sweeps/{sweep_id}/")).json()
        if sweep["status"] not in ("pending", "running"):
            return sweep
        time.sleep(0.1)
    raise AssertionError(f"sweep {sweep_id} still {sweep['status']}")


@pytest.mark.django_db(transaction=True)
def test_a_grid_sweep_from_start_to_export(api, llm_stub):
    llm_stub.responder = quality_responder
    endpoint = ok(
        api.post(
            "/api/endpoints/",
            {
                "name": "stub",
                "base_url": llm_stub.base_url,
                "default_model": "stub-small",
                "api_key": "sk-e2e",
            },
            format="json",
        ),
        201,
    ).json()
    assert ok(api.post(f"/api/endpoints/{endpoint['id']}/test/")).json()["ok"] is True
    experiment = ok(
        api.post(
            "/api/experiments/",
            {
                "name": "Capitals e2e",
                "endpoint": endpoint["id"],
                "pipeline": [{"name": "answer", "user": "Capital of {{ country }}?"}],
                "dataset": DATASET,
                "parameter_space": SPACE,
                "scorers": SCORERS,
            },
            format="json",
        ),
        201,
    ).json()
    base = f"/api/experiments/{experiment['id']}"

    estimate = ok(api.post(f"{base}/sweep/", {"type": "grid", "dry_run": True}, format="json")).json()
    assert estimate["total_runs"] == 6 and estimate["estimate"]["calls"] == 18
    launched = ok(
        api.post(f"{base}/sweep/", {"type": "grid", "max_concurrent": 4}, format="json"), 201
    ).json()
    assert launched["total_runs"] == 6
    sweep = wait_for(api, launched["id"])
    assert sweep["status"] == "completed" and sweep["completed_runs"] == 6 and sweep["failed_runs"] == 0

    runs = ok(api.get("/api/runs/", {"sweep": sweep["id"], "ordering": "-score"})).json()
    assert runs["count"] == 6 and llm_stub.calls == 18
    assert runs["results"][0]["weighted_score"] == 1.0

    board = ok(api.get("/api/runs/leaderboard/", {"experiment": experiment["id"], "n": 3})).json()["results"]
    best, second, _ = board
    assert best["config"] == {"temperature": 0.0, "answer.user": TERSE} and best["weighted_score"] == 1.0
    assert second["config"]["temperature"] == 0.0 and second["config"]["answer.user"] != TERSE
    assert second["tied_with_leader"] is False and best["n_items"] == 3
    assert best["ci_low"] == best["ci_high"] == 1.0

    run = ok(api.get(f"/api/runs/{best['run_id']}/")).json()
    assert [r["output"] for r in sorted(run["stage_results"], key=lambda r: r["item"])] == [
        "Paris",
        "Tokyo",
        "Lima",
    ]

    exports = {
        fmt: ok(api.get(f"{base}/export/", {"format": fmt})).content.decode()
        for fmt in ("json", "yaml", "env")
    }
    parsed = [
        json.loads(exports["json"]),
        yaml.safe_load(exports["yaml"]),
        from_env(dotenv_values(stream=io.StringIO(exports["env"]))),
    ]
    for export in parsed:
        assert export["config"] == best["config"] and export["metadata"]["run_id"] == best["run_id"]
        assert export["stages"] == parsed[0]["stages"]
        assert export["stages"][0]["user"] == TERSE and export["stages"][0]["model"] == "stub-small"
        assert export["stages"][0]["params"] == {"temperature": 0.0}
    assert all("sk-e2e" not in text for text in exports.values())

    report = ok(api.get(f"{base}/report/")).content.decode()
    for heading in ("## Configuration space explored", "## Top 5 configurations", "## Score distributions"):
        assert heading in report
    assert "## Token usage" in report and "## Timing" in report
    assert "`temperature` | `0.0` (2), `0.5` (2), `1.0` (2)" in report
    assert f"Sweep {sweep['id']} (grid, completed): wall time" in report
