"""Sweep throughput benchmark (not a test): python bench/sweep_throughput.py  (make bench)

Every scenario runs a sweep of 2,000 LLM calls against the loopback stub (in a
process of its own, so it does not share our GIL) at 50 ms a call and 32 calls
at once, timed from the API's POST to the sweep's end, in two shapes:

- few configurations x many rows: 4 x 500
- many configurations x few rows: 100 x 20

and three modes: single machine (SQLite + the in-process worker), distributed
with one RQ worker process, and two RQ workers sharing the sweep as on two
machines (PostgreSQL + Redis; SWEEP_WORKERS set to match). The ideal is
calls x latency / concurrency. Each is run twice: cold, then again with every
call answered from the cache. It prints wall time against the ideal, calls per
second (what promptfoo prints as its duration, turned into a rate), CPU per
call and peak memory of the processes that ran the sweep (single machine: this
whole process, API client included; distributed: the RQ workers), the cached
re-run's speed-up, then the targets:
single machine <= 1.15x ideal, two workers <= 1.3x, cached re-run >= 10x faster.
Each scenario runs in a fresh process, so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "promptlooper_bench"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CONCURRENCY = 32
LATENCY_MS = 50.0
SHAPES = ((4, 500), (100, 20))  # configurations x rows
MODES = (("single", 1), ("distributed", 1), ("distributed", 2))
TARGETS = {("single", 1): 1.15, ("distributed", 2): 1.3}  # wall / ideal
CACHED_SPEEDUP = 10.0


# -- the parent: runs each scenario in a fresh process -----------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", nargs=4, metavar=("MODE", "LATENCY_MS", "CONFIGS", "ROWS"))
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS)
    parser.add_argument("--quick", action="store_true", help="one small scenario per mode")
    parser.add_argument("--only", choices=("single", "distributed"), help="one mode only")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each scenario; the median of each figure is shown"
    )
    args = parser.parse_args()
    if args.scenario:
        mode, latency, configs, rows = args.scenario
        print(json.dumps(scenario(mode, float(latency), int(configs), int(rows))))
        return
    shapes = ((4, 100), (20, 20)) if args.quick else SHAPES
    plan = [
        (mode, workers, args.latency_ms, configs, rows)
        for configs, rows in shapes
        for mode, workers in MODES
        if args.only in (None, mode)
    ]
    print(f"median of {args.repeat} runs of each scenario")
    results = []
    for p in plan:
        results.append(median_of([run_scenario(*p) for _ in range(args.repeat)]))
        print_row(results[-1], header=len(results) == 1)
    verdict(results)


def median_of(runs: list[dict]) -> dict:
    """Each figure's median over runs of one scenario: two shared cores make any one run noisy."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, float):
            merged[key] = statistics.median(r[key] for r in runs)
    merged["cached_stub_calls"] = max(r["cached_stub_calls"] for r in runs)  # any at all is news
    return merged


def run_scenario(mode: str, workers: int, latency: float, configs: int, rows: int) -> dict:
    cmd = [sys.executable, __file__, "--scenario", mode, str(latency), str(configs), str(rows)]
    env = {**os.environ, "SWEEP_WORKERS": str(workers)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"scenario {mode} x{workers} {configs}x{rows} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


HEAD = (
    f"{'mode':<12}{'workers':>8}{'shape':>8}{'calls':>7}{'wall s':>8}{'ideal s':>8}{'wall/ideal':>11}"
    f"{'calls/s':>9}{'cpu ms/call':>12}{'cached s':>9}{'speed-up':>9}{'cached stub':>12}{'peak MiB':>9}"
)


def print_row(r: dict, header: bool = False) -> None:
    if header:
        print(HEAD)
        print("-" * len(HEAD))
    ratio = f"{r['wall_s'] / r['ideal_s']:.2f}x" if r["ideal_s"] else "-"
    shape = f"{r['configs']}x{r['rows']}"
    print(
        f"{r['mode']:<12}{r['workers']:>8}{shape:>8}{r['calls']:>7}{r['wall_s']:>8.2f}{r['ideal_s']:>8.2f}"
        f"{ratio:>11}{r['calls_per_s']:>9.0f}{r['cpu_ms_per_call']:>12.3f}{r['cached_s']:>9.3f}"
        f"{r['wall_s'] / r['cached_s']:>8.1f}x{r['cached_stub_calls']:>12}{r['peak_mib']:>9.0f}",
        flush=True,
    )


def verdict(results: list[dict]) -> None:
    """The issue's targets, one line each: met or missed, with the figure."""
    print()
    for r in results:
        name = f"{r['mode']} x{r['workers']} {r['configs']}x{r['rows']}"
        target = TARGETS.get((r["mode"], r["workers"]))
        if target and r["ideal_s"]:
            ratio = r["wall_s"] / r["ideal_s"]
            print(
                f"{'met   ' if ratio <= target else 'MISSED'} {name}: {ratio:.2f}x ideal (target <= {target}x)"
            )
        speedup = r["wall_s"] / r["cached_s"]
        print(
            f"{'met   ' if speedup >= CACHED_SPEEDUP else 'MISSED'} {name}: cached re-run {speedup:.1f}x faster"
            f" (target >= {CACHED_SPEEDUP:.0f}x)"
        )


# -- one scenario, in its own process ----------------------------------------
def scenario(mode: str, latency_ms: float, configs: int, rows: int) -> dict:
    stub = start_stub(latency_ms)
    workers: list[subprocess.Popen] = []
    try:
        base_url = stub.stdout.readline().strip()
        setup_django(mode)
        experiment, client = make_experiment(base_url, configs, rows)
        if mode == "distributed":
            workers = [start_worker() for _ in range(int(os.environ["SWEEP_WORKERS"]))]
            wait_for_workers(len(workers))
        _, cpu_before = usage(workers)
        with profiled(workers, "cold"):
            cold = timed_sweep(client, experiment, base_url)
        _, cpu_cold = usage(workers)
        with profiled(workers, "cached"):
            cached = timed_sweep(client, experiment, base_url)
        peak_kb, _ = usage(workers)
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(10)
        stub.terminate()
    check_sweeps(cold, cached)
    calls = cold["calls"]
    return {
        "mode": mode,
        "workers": len(workers) or 1,
        "latency_ms": latency_ms,
        "configs": configs,
        "rows": rows,
        "calls": calls,
        "wall_s": cold["wall_s"],
        "calls_per_s": calls / cold["wall_s"],
        "ideal_s": calls * latency_ms / 1000 / CONCURRENCY,
        "cpu_ms_per_call": (cpu_cold - cpu_before) * 1000 / calls,
        "cached_s": cached["wall_s"],
        "cached_stub_calls": cached["stub_calls"],
        "peak_mib": peak_kb / 1024,
        "status": cold["status"],
    }


def check_sweeps(cold: dict, cached: dict) -> None:
    """A sweep that ended early, or called the stub more or less than planned,
    would look fast: such a scenario is an error, not a figure."""
    for name, sweep, stub_calls in (("cold", cold, cold["calls"]), ("cached", cached, 0)):
        if sweep["status"] != "completed":
            raise SystemExit(f"the {name} sweep ended {sweep['status']}")
        if sweep["stub_calls"] != stub_calls:
            raise SystemExit(f"the {name} sweep made {sweep['stub_calls']} calls, not {stub_calls}")


@contextlib.contextmanager
def profiled(workers: list[subprocess.Popen], sweep: str):
    """BENCH_PROFILE=FILE: py-spy samples the cached re-run (BENCH_PROFILE_RUN=cold:
    the cold run) of the sweep's process while it holds the GIL into FILE
    (collapsed stacks), to see where its time goes."""
    path = os.environ.get("BENCH_PROFILE")
    if not path or os.environ.get("BENCH_PROFILE_RUN", "cached") != sweep:
        yield
        return
    pid = workers[0].pid if workers else os.getpid()
    spy = Path(sys.executable).parent / "py-spy"
    cmd = [
        str(spy),
        "record",
        *os.environ.get("BENCH_PROFILE_FLAGS", "--gil").split(),
        "-r",
        "500",
        "-f",
        "raw",
        "-o",
        path,
        "--pid",
        str(pid),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # py-spy attaches
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def start_stub(latency_ms: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.llm_stub", "--latency-ms", str(latency_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def setup_django(mode: str) -> None:
    os.environ.setdefault("SECRET_KEY", "bench-secret-key-not-for-production")
    # DEBUG off, as in production: with it on, Django records every SQL query.
    os.environ.update(
        DJANGO_SETTINGS_MODULE="promptlooper_site.settings",
        LOG_LEVEL="ERROR",
        DEBUG="false",
        MAX_SWEEP_RUNS="100000",
    )
    os.environ.setdefault("SWEEP_WORKERS", "1")
    if mode == "distributed":
        recreate_postgres_db()
        os.environ.update(DATABASE_URL=f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{BENCH_DB}", REDIS_URL=REDIS_URL)
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
    else:
        path = Path(tempfile.mkdtemp()) / "bench.sqlite3"
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
        os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def recreate_postgres_db() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def make_experiment(base_url: str, configs: int, rows: int):
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    from endpoints.models import Endpoint
    from experiments.models import DatasetItem, Experiment
    from projects.models import Project

    project = Project.objects.create(name="bench")
    user = User.objects.create_user("bench")
    project.memberships.create(user=user, role="admin")
    endpoint = Endpoint.objects.create(
        project=project, name="stub", base_url=base_url, default_model="stub-small"
    )
    experiment = Experiment.objects.create(
        project=project,
        name="bench",
        endpoint=endpoint,
        pipeline=[{"name": "answer", "system": "Be brief.", "user": "Capital of {{ country }}?"}],
        parameter_space={"temperature": [round(i / 100, 2) for i in range(configs)]},
        scorers=[{"type": "keyword", "weight": 1, "config": {"required_present": ["{{ country }}"]}}],
    )
    DatasetItem.objects.bulk_create(
        DatasetItem(experiment=experiment, position=i, input={"country": f"Country {i}"}, reference="x")
        for i in range(rows)
    )
    client = APIClient()
    client.force_authenticate(user)
    # A server has its code loaded before the first sweep: so must the one measured here.
    assert client.get(f"/api/experiments/{experiment.pk}/").status_code == 200
    return experiment, client


def timed_sweep(client, experiment, base_url: str) -> dict:
    from django.db import connection

    from runs.models import FINISHED_SWEEP_STATUSES, Sweep

    before = stub_calls(base_url)
    body = {"type": "grid", "max_concurrent": CONCURRENCY, "max_tokens": 10**12}
    started = time.perf_counter()
    response = client.post(f"/api/experiments/{experiment.pk}/sweep/", body, format="json")
    if response.status_code != 201:
        raise SystemExit(f"launch refused: {response.status_code} {response.content[:500]!r}")
    sweep_id = response.json()["id"]
    # A plain SELECT every 20 ms: through the ORM, polling took a tenth of the GIL from
    # the sweep it measures (which shares this process in single-machine mode).
    table = connection.ops.quote_name(Sweep._meta.db_table)
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f"SELECT status FROM {table} WHERE id = %s", [sweep_id])
            if cursor.fetchone()[0] in FINISHED_SWEEP_STATUSES:
                break
            time.sleep(0.02)
    wall = time.perf_counter() - started
    sweep = Sweep.objects.get(pk=sweep_id)
    if os.environ.get("BENCH_PHASES"):
        print_phases(sweep)
    return {
        "wall_s": wall,
        "calls": sweep.estimate["calls"],
        "status": sweep.status,
        "stub_calls": stub_calls(base_url) - before,
    }


def print_phases(sweep) -> None:
    from django.db.models import Max, Min

    sweep.refresh_from_db()
    runs = sweep.runs.aggregate(first=Min("started_at"), last=Max("finished_at"))
    print(
        f"launch->job {(sweep.started_at - sweep.created_at).total_seconds():.2f}s, "
        f"first run {(runs['first'] - sweep.created_at).total_seconds():.2f}s, "
        f"last run {(runs['last'] - sweep.created_at).total_seconds():.2f}s, "
        f"finished {(sweep.finished_at - sweep.created_at).total_seconds():.2f}s",
        file=sys.stderr,
    )


def stub_calls(base_url: str) -> int:
    return httpx.get(base_url.replace("/v1", "/_stats")).json()["calls"]


def start_worker() -> subprocess.Popen:
    # SimpleWorker runs jobs in its own process (no fork), so its memory is measurable.
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "rqworker",
            "sweeps",
            "default",
            "webhooks",
            "--worker-class",
            "rq.worker.SimpleWorker",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc


def wait_for_workers(count: int, timeout: float = 60.0) -> None:
    """Each worker's share of the sweep is queued at launch: a worker still
    starting would leave its share to the others, at its share of the concurrency."""
    import redis
    from rq import Worker

    connection = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + timeout
    # Idle, not merely registered: a registered worker may still be setting up.
    while (idle := sum(w.get_state() == "idle" for w in Worker.all(connection=connection))) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {idle} of {count} RQ workers are waiting for jobs")
        time.sleep(0.1)


def usage(workers: list[subprocess.Popen]) -> tuple[float, float]:
    """Peak resident memory (KiB, of the largest process) and CPU seconds (all
    together) of the processes that ran the engine."""
    if not workers:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_maxrss, own.ru_utime + own.ru_stime
    peak, cpu = 0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for worker in workers:
        status = Path(f"/proc/{worker.pid}/status").read_text()
        peak = max(
            peak, next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
        )
        fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / ticks
    return peak, cpu


if __name__ == "__main__":
    main()
