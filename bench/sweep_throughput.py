"""Sweep throughput benchmark (not a test): python bench/sweep_throughput.py

For each mode (single machine: SQLite + in-process worker; distributed:
PostgreSQL + Redis + one RQ worker process, then two sharing the sweep as on two
machines; SWEEP_WORKERS is set to match) and each stub latency (0 ms, 50 ms)
it runs a sweep of at least 2,000 LLM calls against the loopback stub (in a
process of its own, so it does not share our GIL) and prints calls per second,
engine CPU per call, wall time against the ideal (calls x latency / concurrency),
a warm-cache re-run (calls per second, calls that reached the stub) and peak
memory (of the largest worker). Each scenario runs in a fresh process, so its peak memory is its own;
a small and a large sweep are compared to show memory does not grow with runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
ITEMS = 20
CONCURRENCY = 32


# -- the parent: runs each scenario in a fresh process -----------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", nargs=3, metavar=("MODE", "LATENCY_MS", "CALLS"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="one small scenario per mode")
    args = parser.parse_args()
    if args.scenario:
        mode, latency, calls = args.scenario
        print(json.dumps(scenario(mode, float(latency), int(calls))))
        return
    plan = [(m, lat, args.calls, 1) for m in ("single", "distributed") for lat in (0, 50)]
    # Two worker processes sharing one sweep, as on two machines.
    plan += [("distributed", lat, args.calls, 2) for lat in (0, 50)]
    plan += [("single", 0, args.calls * 2, 1), ("distributed", 0, args.calls * 2, 1)]
    if args.quick:
        plan = [("single", 0, 400, 1), ("distributed", 0, 400, 1)]
    results = [run_scenario(*p) for p in plan]
    report(results)


def run_scenario(mode: str, latency: float, calls: int, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--scenario", mode, str(latency), str(calls)]
    env = {**os.environ, "SWEEP_WORKERS": str(workers)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"scenario {mode} {latency}ms failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: list[dict]) -> None:
    head = (
        f"{'mode':<12}{'workers':>8}{'latency':>8}{'calls':>7}{'wall s':>8}{'calls/s':>9}{'ideal s':>8}"
        f"{'wall/ideal':>11}{'cpu ms/call':>12}{'warm calls/s':>13}{'warm stub':>10}{'peak MiB':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        ratio = f"{r['wall_s'] / r['ideal_s']:.2f}x" if r["ideal_s"] else "-"
        print(
            f"{r['mode']:<12}{r['workers']:>8}{r['latency_ms']:>6.0f}ms{r['calls']:>7}{r['wall_s']:>8.2f}"
            f"{r['calls_per_s']:>9.0f}{r['ideal_s']:>8.2f}{ratio:>11}{r['cpu_ms_per_call']:>12.3f}"
            f"{r['warm_calls_per_s']:>13.0f}{r['warm_stub_calls']:>10}{r['peak_mib']:>9.0f}"
        )
    for mode in ("single", "distributed"):
        sizes = sorted(
            (r for r in results if r["mode"] == mode and r["latency_ms"] == 0 and r["workers"] == 1),
            key=lambda r: r["calls"],
        )
        if len(sizes) >= 2:
            small, large = sizes[0], sizes[-1]
            print(
                f"{mode}: peak memory {small['peak_mib']:.0f} MiB at {small['calls']} calls, "
                f"{large['peak_mib']:.0f} MiB at {large['calls']} calls "
                f"({large['peak_mib'] / small['peak_mib']:.2f}x for {large['calls'] / small['calls']:.0f}x the calls)"
            )


# -- one scenario, in its own process ----------------------------------------
def scenario(mode: str, latency_ms: float, calls: int) -> dict:
    stub = start_stub(latency_ms)
    workers: list[subprocess.Popen] = []
    try:
        base_url = stub.stdout.readline().strip()
        setup_django(mode)
        experiment = make_experiment(base_url, calls // ITEMS)
        if mode == "distributed":
            workers = [start_worker() for _ in range(int(os.environ["SWEEP_WORKERS"]))]
            wait_for_workers(len(workers))
        _, cpu_before = usage(workers)
        cold = timed_sweep(experiment, base_url)
        warm = timed_sweep(experiment, base_url)
        peak_kb, cpu_after = usage(workers)
        cpu_s = cpu_after - cpu_before
        in_flight = httpx.get(base_url.replace("/v1", "/_stats")).json()["max_in_flight"]
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(10)
        stub.terminate()
    ideal = calls * latency_ms / 1000 / CONCURRENCY
    return {
        "mode": mode,
        "workers": len(workers) or 1,
        "latency_ms": latency_ms,
        "calls": cold["calls"],
        "wall_s": cold["wall_s"],
        "calls_per_s": cold["calls"] / cold["wall_s"],
        "ideal_s": ideal,
        "cpu_ms_per_call": cpu_s * 1000 / (cold["calls"] + warm["calls"]),
        "warm_calls_per_s": warm["calls"] / warm["wall_s"],
        "warm_stub_calls": warm["stub_calls"],
        "peak_mib": peak_kb / 1024,
        "status": cold["status"],
        "max_in_flight": in_flight,
    }


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


def make_experiment(base_url: str, configs: int):
    from endpoints.models import Endpoint
    from experiments.models import DatasetItem, Experiment
    from projects.models import Project

    project = Project.objects.create(name="bench")
    endpoint = Endpoint.objects.create(
        project=project, name="stub", base_url=base_url, default_model="stub-small"
    )
    experiment = Experiment.objects.create(
        project=project,
        name="bench",
        endpoint=endpoint,
        pipeline=[{"name": "answer", "system": "Be brief.", "user": "Capital of {{ country }}?"}],
        parameter_space={"temperature": [round(i / 1000, 3) for i in range(configs)]},
        scorers=[{"type": "keyword", "weight": 1, "config": {"required_present": ["{{ country }}"]}}],
    )
    DatasetItem.objects.bulk_create(
        DatasetItem(experiment=experiment, position=i, input={"country": f"Country {i}"}, reference="x")
        for i in range(ITEMS)
    )
    return experiment


def timed_sweep(experiment, base_url: str) -> dict:
    from runs.models import FINISHED_SWEEP_STATUSES
    from runs.sweeps import SweepRequest, launch_sweep

    before = stub_calls(base_url)
    started = time.perf_counter()
    sweep = launch_sweep(experiment, SweepRequest(type="grid", max_concurrent=CONCURRENCY, max_tokens=10**12))
    while sweep.status not in FINISHED_SWEEP_STATUSES:
        time.sleep(0.05)  # polling more often would steal the GIL from the sweep it measures
        sweep.refresh_from_db(fields=["status"])
    wall = time.perf_counter() - started
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
    while Worker.count(connection=connection) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {Worker.count(connection=connection)} of {count} RQ workers started")
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
