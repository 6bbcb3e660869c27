"""Reads at scale (not a test): python bench/scale_reads.py [--sizes 10000,100000,1000000]

Creates a PostgreSQL database of its own (promptlooper_scale, dropped at the
end), one experiment of 20 items and, in SQL (INSERT ... SELECT generate_series),
completed runs with 20 scores and 20 stage results each, their stored aggregates
filled in as a completed run has them. The runs cycle through CONFIGS
configurations (sweep k runs each once), so a configuration is run again and again
as the run count grows. Autovacuum is off on the bench database; the tables are
VACUUM ANALYZEd after each load.

At each size it times, through Django's test client (median of 5): the
leaderboard (n=10, n=100), the run list ordered by score and filtered by score,
the report (built from the aggregates with its cache cleared, and served from
the cache) and the charts page; then prints the table, the report's peak Python
memory (tracemalloc) and the 1M / 10k ratios.

The stored intervals are mean ± 1.96·sd/√n rather than a bootstrap: they only
need to be there, the bench times reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
SCALE_DB = "promptlooper_scale"
ITEMS = 20
CONFIGS = 10_000
REPEATS = 5
SWEEP_RUNS = CONFIGS

# Deterministic "random" figures in SQL: a run's quality q(i) and an item's noise.
FUNCTIONS = """
CREATE FUNCTION bench_q(i bigint) RETURNS float IMMUTABLE LANGUAGE sql
  AS $$ SELECT ((i * 7919) % 1009)::float / 1008 $$;
CREATE FUNCTION bench_v(i bigint, j int) RETURNS float IMMUTABLE LANGUAGE sql
  AS $$ SELECT round((0.75 * bench_q(i) + 0.25 * (((i * 31 + j * 104729) % 101)::float / 100))::numeric, 3)::float $$;
CREATE FUNCTION bench_lat(i bigint, j int) RETURNS float IMMUTABLE LANGUAGE sql
  AS $$ SELECT 200 + ((i * 13 + j * 7727) % 1801)::float $$;
CREATE FUNCTION bench_cached(i bigint, j int) RETURNS boolean IMMUTABLE LANGUAGE sql
  AS $$ SELECT (i + j) % 10 = 0 $$;
"""

RUNS_SQL = """
INSERT INTO runs_run (id, experiment_id, sweep_id, config, config_hash, position, status,
  weighted_score, score_spread, tokens_in, tokens_out, latency_ms, wall_ms, calls, cached_calls,
  scorer_stats, error, worker, created_at, started_at, finished_at, is_latest, own_input,
  ci_low, ci_high, n_items, item_scores, scorer_means, cached_tokens, latency_p50_ms, latency_p95_ms)
SELECT i, %(experiment)s, %(first_sweep)s + (i - 1) / %(sweep_runs)s,
  c.config, md5(c.config::text), (i - 1) %% %(sweep_runs)s, 'completed',
  s.mean, NULL, 20 * 120, 20 * 30, l.mean, l.total, 20, l.cached,
  jsonb_build_object('keyword', jsonb_build_object('scored', 20, 'unscored', 0)), '', 'bench',
  t.at, t.at, t.at + interval '1 second', false, false,
  greatest(0, s.mean - 1.96 * s.sd / sqrt(20)), least(1, s.mean + 1.96 * s.sd / sqrt(20)),
  20, s.items, jsonb_build_object('keyword', s.mean), l.cached * 150, l.p50, l.p95
FROM generate_series(%(start)s, %(stop)s) AS i,
  LATERAL (SELECT jsonb_build_object('temperature', ((i - 1) %% 100) / 100.0,
           'variant', ((i - 1) %% %(configs)s) / 100) AS config) c,
  LATERAL (SELECT timestamptz '2026-01-01' + i * interval '1 second' AS at) t,
  LATERAL (SELECT avg(v) AS mean, stddev_pop(v) AS sd,
           jsonb_object_agg((%(first_item)s + j - 1)::text, v) AS items
           FROM (SELECT j, bench_v(i, j) AS v FROM generate_series(1, 20) j) x) s,
  LATERAL (SELECT avg(lat) AS mean, sum(lat) AS total, count(*) FILTER (WHERE hit) AS cached,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY lat) FILTER (WHERE NOT hit) AS p50,
           percentile_disc(0.95) WITHIN GROUP (ORDER BY lat) FILTER (WHERE NOT hit) AS p95
           FROM (SELECT bench_lat(i, j) AS lat, bench_cached(i, j) AS hit
                 FROM generate_series(1, 20) j) y) l
"""

SCORES_SQL = """
INSERT INTO runs_score (run_id, item_id, sample_index, scorer, value, details, source, comment, created_at)
SELECT i, %(first_item)s + j - 1, 0, 'keyword', bench_v(i, j), '{}', 'auto', '',
  timestamptz '2026-01-01' + i * interval '1 second'
FROM generate_series(%(start)s, %(stop)s) AS i, generate_series(1, 20) AS j
"""

STAGES_SQL = """
INSERT INTO runs_stageresult (run_id, item_id, sample_index, stage_index, stage_name, model,
  system_prompt, user_prompt, output, tokens_in, tokens_out, latency_ms, cached, config_hash)
SELECT i, %(first_item)s + j - 1, 0, 0, 'answer', 'bench-model', 'Be brief.',
  'What is the capital of country ' || j || '?', 'Capital ' || j, 120, 30,
  bench_lat(i, j), bench_cached(i, j), md5(i::text || ':' || j)
FROM generate_series(%(start)s, %(stop)s) AS i, generate_series(1, 20) AS j
"""


# -- the database -------------------------------------------------------------------
def admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def scale_url() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + SCALE_DB


def setup_django() -> None:
    os.environ["DATABASE_URL"] = scale_url()
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-real-use")
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "promptlooper_site.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0)


def fixtures() -> dict:
    """The user, project, experiment (20 items, one keyword scorer) and sweeps."""
    from django.contrib.auth.models import User
    from django.db import connection

    from experiments.models import DatasetItem, Experiment
    from projects.models import Project

    user = User.objects.create_user("alice", password="bench")
    project = Project.create_for(user, "Scale")
    experiment = Experiment.objects.create(
        project=project,
        name="A million runs",
        pipeline=[{"name": "answer", "system": "Be brief.", "user": "Capital of {{ country }}?"}],
        parameter_space={"temperature": [0.0, 1.0]},
        scorers=[{"type": "keyword", "weight": 1.0, "config": {"required_present": ["{{ capital }}"]}}],
    )
    DatasetItem.objects.bulk_create(
        DatasetItem(experiment=experiment, position=j, input={"country": f"Country {j}"}, reference="")
        for j in range(ITEMS)
    )
    first_item = experiment.items.order_by("id").values_list("id", flat=True)[0]
    with connection.cursor() as cursor:
        cursor.execute(FUNCTIONS)
        for table in ("runs_run", "runs_score", "runs_stageresult"):
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    return {"user": user, "experiment": experiment, "first_item": first_item, "loaded": 0}


def grow(state: dict, size: int) -> float:
    """Add runs up to `size` (with their scores, stage results and sweeps); seconds."""
    from django.db import connection

    from runs.models import Sweep

    started = time.perf_counter()
    experiment = state["experiment"]
    sweeps = -(-size // SWEEP_RUNS)
    have = experiment.sweeps.count()
    Sweep.objects.bulk_create(
        Sweep(experiment=experiment, type="grid", status="completed", total_runs=SWEEP_RUNS)
        for _ in range(sweeps - have)
    )
    first_sweep = experiment.sweeps.order_by("id").values_list("id", flat=True)[0]
    chunk = 50_000
    with connection.cursor() as cursor:
        for start in range(state["loaded"] + 1, size + 1, chunk):
            params = {
                "experiment": experiment.pk,
                "first_sweep": first_sweep,
                "sweep_runs": SWEEP_RUNS,
                "configs": CONFIGS,
                "first_item": state["first_item"],
                "start": start,
                "stop": min(size, start + chunk - 1),
            }
            for sql in (RUNS_SQL, SCORES_SQL, STAGES_SQL):
                cursor.execute(sql, params)
            print(f"  loaded {params['stop']:,} runs ({time.perf_counter() - started:.0f} s)", flush=True)
        # The latest run of each configuration: the last CONFIGS runs loaded.
        cursor.execute("UPDATE runs_run SET is_latest = false WHERE is_latest AND id <= %s", [size - CONFIGS])
        cursor.execute(
            "UPDATE runs_run SET is_latest = true WHERE id > %s AND NOT is_latest", [size - CONFIGS]
        )
        cursor.execute("SELECT setval(pg_get_serial_sequence('runs_run', 'id'), %s)", [size])
    state["loaded"] = size
    for table in ("runs_run", "runs_score", "runs_stageresult"):
        with psycopg.connect(scale_url(), autocommit=True) as conn:
            conn.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


# -- the timings --------------------------------------------------------------------
def median_ms(call: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def get(client, url: str) -> Callable[[], object]:
    def call() -> object:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return response

    return call


def operations(client, experiment) -> dict[str, Callable[[], object]]:
    from experiments.models import Report

    def cold_report() -> object:
        Report.forget(experiment.pk)
        return get(client, f"/experiments/{experiment.pk}/report/")()

    return {
        "leaderboard n=10": get(client, f"/api/runs/leaderboard/?experiment={experiment.pk}&n=10"),
        "leaderboard n=100": get(client, f"/api/runs/leaderboard/?experiment={experiment.pk}&n=100"),
        "GET /api/runs/?ordering=-score": get(client, "/api/runs/?ordering=-score"),
        "GET /api/runs/?min_score=0.5": get(client, "/api/runs/?min_score=0.5"),
        "report (built)": cold_report,
        "report (cached)": get(client, f"/experiments/{experiment.pk}/report/"),
        "UI charts page": get(client, f"/experiments/{experiment.pk}/charts/"),
    }


def report_peak_mib(client, experiment) -> float:
    from experiments.models import Report

    Report.forget(experiment.pk)
    tracemalloc.start()
    get(client, f"/experiments/{experiment.pk}/report/")()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def measure(state: dict) -> dict[str, float]:
    from django.test import Client

    client = Client()
    client.force_login(state["user"])
    ops = operations(client, state["experiment"])
    for call in ops.values():
        call()  # warm the caches once, as a running server has them
    timings = {name: median_ms(call) for name, call in ops.items()}
    timings["report peak MiB"] = report_peak_mib(client, state["experiment"])
    return timings


# -- the table ----------------------------------------------------------------------
def print_table(sizes: list[int], results: dict[int, dict[str, float]], loads: dict[int, float]) -> None:
    header = "| operation | " + " | ".join(f"{s:,} runs" for s in sizes) + " | last / first |"
    print(header)
    print("|" + "---|" * (len(sizes) + 2))
    for name in results[sizes[0]]:
        unit = "MiB" if "MiB" in name else "ms"
        cells = [f"{results[s][name]:.1f} {unit}" for s in sizes]
        ratio = results[sizes[-1]][name] / results[sizes[0]][name]
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    print("| (load time) | " + " | ".join(f"{loads[s]:.0f} s" for s in sizes) + " | |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--keep", action="store_true", help="keep the database (to look at plans)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    admin(f"DROP DATABASE IF EXISTS {SCALE_DB}")
    admin(f"CREATE DATABASE {SCALE_DB}")
    try:
        setup_django()
        state = fixtures()
        results, loads = {}, {}
        for size in sizes:
            print(f"loading {size:,} runs ...", flush=True)
            loads[size] = grow(state, size)
            results[size] = measure(state)
            print(f"  {results[size]}", flush=True)
        print_table(sizes, results, loads)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            admin(f"DROP DATABASE IF EXISTS {SCALE_DB}")


if __name__ == "__main__":
    main()
