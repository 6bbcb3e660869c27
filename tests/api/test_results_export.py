"""GET /api/runs/export/?sweep=&format=csv|jsonl: one line per run x dataset row, streamed."""

import csv
import io
import json
import tracemalloc

import pytest

from experiments.models import DatasetItem
from runs.models import Run, RunStatus, Score, StageResult, Sweep, SweepStatus
from tests.api.helpers import KEYWORD
from tests.factories import make_endpoint, make_experiment, make_user

pytestmark = pytest.mark.django_db

PIPELINE = [
    {"name": "draft", "user": "Capital of {{ country }}?"},
    {"name": "final", "user": "{{ previous }}"},
]


@pytest.fixture
def experiment(alice):
    scorers = [KEYWORD, {"type": "format", "name": "short", "config": {"check": "length", "max_tokens": 3}}]
    return make_experiment(make_endpoint(), pipeline=PIPELINE, scorers=scorers)


def add_sweep(experiment, runs: int, two_stages: bool = True, output: str = "Paris") -> Sweep:
    """`runs` finished runs with every dataset row answered and scored, written in bulk."""
    sweep = Sweep.objects.create(experiment=experiment, status=SweepStatus.COMPLETED, total_runs=runs)
    created = Run.objects.bulk_create(
        Run(
            experiment=experiment,
            sweep=sweep,
            config={"temperature": i / 10, "model": "m"},
            config_hash=f"{sweep.pk}-{i}",
            status=RunStatus.COMPLETED,
            position=i,
        )
        for i in range(runs)
    )
    items = list(experiment.items.order_by("position"))
    stages = [("draft", "thinking"), ("final", output)] if two_stages else [("final", output)]
    results = (
        StageResult(
            run=run,
            item=item,
            stage_index=s,
            stage_name=name,
            user_prompt="q",
            output=text,
            tokens_in=10,
            tokens_out=2,
            latency_ms=50.0,
            config_hash="h",
        )
        for run in created
        for item in items
        for s, (name, text) in enumerate(stages)
    )
    StageResult.objects.bulk_create(results, batch_size=5000)
    scores = (
        Score(run=run, item=item, scorer=name, value=value)
        for run in created
        for item in items
        for name, value in (("keyword", 1.0), ("short", 0.5))
    )
    Score.objects.bulk_create(scores, batch_size=5000)
    return sweep


def lines(response) -> list[str]:
    assert response.status_code == 200
    return b"".join(response.streaming_content).decode().splitlines()


def test_jsonl_has_one_line_per_run_and_row_with_config_input_output_scores_tokens_latency(api, experiment):
    sweep = add_sweep(experiment, runs=2)
    response = api.get(f"/api/runs/export/?sweep={sweep.pk}&format=jsonl")
    assert response["Content-Type"] == "application/x-ndjson"
    assert f'filename="sweep-{sweep.pk}.jsonl"' in response["Content-Disposition"]
    rows = [json.loads(line) for line in lines(response)]
    assert len(rows) == 2 * 3
    first = rows[0]
    assert first["config"] == {"temperature": 0.0, "model": "m"}
    assert first["input"] == {"country": "France", "capital": "Paris"}
    assert first["reference"] == "Paris is the capital of France."
    assert first["output"] == "Paris"  # the last stage's
    assert first["scores"] == {"keyword": 1.0, "short": 0.5}
    assert (first["tokens_in"], first["tokens_out"], first["latency_ms"]) == (20, 4, 100.0)
    assert "cost" not in first  # the endpoint has no prices
    assert [(r["run_id"], r["item_id"]) for r in rows] == sorted((r["run_id"], r["item_id"]) for r in rows)


def test_csv_has_a_column_per_parameter_input_and_scorer(api, experiment):
    sweep = add_sweep(experiment, runs=1)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines(api.get(f"/api/runs/export/?sweep={sweep.pk}"))))))
    assert len(rows) == 3
    assert list(rows[0]) == [
        "run_id",
        "config.model",
        "config.temperature",
        "item_id",
        "sample",
        "input.capital",
        "input.country",
        "reference",
        "output",
        "score.keyword",
        "score.short",
        "tokens_in",
        "tokens_out",
        "latency_ms",
    ]
    assert rows[1]["input.country"] == "Japan" and rows[1]["score.short"] == "0.5"


def test_with_prices_each_line_carries_its_cost(api, experiment):
    endpoint = experiment.endpoint
    endpoint.price_in, endpoint.price_out = 2.0, 10.0  # per million tokens
    endpoint.save()
    sweep = add_sweep(experiment, runs=1)
    first = json.loads(lines(api.get(f"/api/runs/export/?sweep={sweep.pk}&format=jsonl"))[0])
    assert first["cost"] == pytest.approx((20 * 2.0 + 4 * 10.0) / 1_000_000)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines(api.get(f"/api/runs/export/?sweep={sweep.pk}"))))))
    assert float(rows[0]["cost"]) == pytest.approx(first["cost"])


def test_formula_looking_cells_are_neutralised_in_csv(api, experiment):
    DatasetItem.objects.filter(experiment=experiment, position=0).update(
        input={"country": '=HYPERLINK("http://evil")', "capital": "@SUM(A1)"}
    )
    sweep = add_sweep(experiment, runs=1, output="+cmd|' /C calc'!A0")
    text = "\n".join(lines(api.get(f"/api/runs/export/?sweep={sweep.pk}&format=csv")))
    first = next(csv.DictReader(io.StringIO(text)))
    assert first["input.country"] == '\'=HYPERLINK("http://evil")'
    assert first["input.capital"] == "'@SUM(A1)"
    assert first["output"] == "'+cmd|' /C calc'!A0"
    assert first["config.temperature"] == "0.0"  # numbers are left alone


def test_a_missing_or_foreign_sweep_is_refused(api, experiment):
    assert api.get("/api/runs/export/?format=csv").json() == {"sweep": ["Give the sweep's id: ?sweep=<id>."]}
    assert api.get("/api/runs/export/?sweep=999999&format=jsonl").status_code == 404
    assert api.get("/api/runs/export/?sweep=1&format=xlsx").status_code == 404


def test_an_outsider_cannot_export_the_teams_sweep(experiment, client):
    from rest_framework.test import APIClient

    sweep = add_sweep(experiment, runs=1)
    outsider = APIClient()
    outsider.force_authenticate(make_user("mallory"))
    assert outsider.get(f"/api/runs/export/?sweep={sweep.pk}").status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_lines_come_from_an_async_iterator_not_a_buffered_list(alice, recwarn):
    from asgiref.sync import sync_to_async
    from django.db import connections
    from django.test import AsyncClient

    def setup():
        experiment = make_experiment(make_endpoint(), pipeline=PIPELINE, scorers=[KEYWORD])
        return add_sweep(experiment, runs=400)

    sweep = await sync_to_async(setup)()
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.get(f"/api/runs/export/?sweep={sweep.pk}&format=jsonl")
    assert response.status_code == 200 and response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    # The ORM thread keeps a connection: PostgreSQL could not drop the test database.
    await sync_to_async(connections.close_all)()
    assert len(chunks) == 400 * 3 // 500 + 1 and sum(c.count(b"\n") for c in chunks) == 1200
    assert not [w for w in recwarn if "StreamingHttpResponse" in str(w.message)]


def peak_bytes(api, sweep: Sweep) -> tuple[int, int]:
    """Lines streamed and the peak Python memory while streaming them."""
    tracemalloc.start()
    try:
        response = api.get(f"/api/runs/export/?sweep={sweep.pk}&format=csv")
        count = sum(chunk.count(b"\n") for chunk in response.streaming_content)
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_100000_rows_takes_no_more_memory_than_10000(api, alice):
    rows = [({"country": f"Country {i}", "capital": f"City {i}"}, f"City {i}") for i in range(100)]
    experiment = make_experiment(make_endpoint(), items=rows, name="Big")
    small, large = add_sweep(experiment, 100, two_stages=False), add_sweep(experiment, 1000, two_stages=False)
    small_lines, small_peak = peak_bytes(api, small)
    large_lines, large_peak = peak_bytes(api, large)
    assert (small_lines, large_lines) == (10_001, 100_001)  # with the header
    print(f"peak memory: 10,000 rows {small_peak / 1e6:.1f} MB, 100,000 rows {large_peak / 1e6:.1f} MB")
    assert large_peak < small_peak * 1.5
