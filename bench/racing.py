"""Racing benchmark (not a test): python bench/racing.py [--seeds 10]

A loopback stub (in a process of its own, 0 ms latency) answers 36
configurations (6 prompt styles x 6 temperatures) over 200 dataset rows. Each
(row, configuration) answer is right with a probability set by the
configuration: 0.85 at the peak, 0.80 for its two temperature neighbours, 0.775
for its two style neighbours, and falling off fast further away (most
configurations are plainly behind): p = max(0.1, 0.85 - 0.05 dt^2 - 0.075 ds^2
- 0.1 dt^2 ds^2) for dt, ds steps from the peak. Right or wrong is drawn from a
hash of the request, so every method sees the same answers on a seed.

For each seed it runs, in single-machine mode (SQLite, the in-process worker,
real HTTP to the stub) and each from a cold cache: a racing sweep, the full grid,
and random search over 12 of the 36. It prints, per method, how often the
leaderboard's winner is one of the three truly best and its share of the grid's
calls (counted at the stub), then checks racing against the issue's bar: a
top-three pick in at least 8 of 10 seeds, at least as often as the grid, with at
most 35% of the grid's calls.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sweep_throughput import setup_django, stub_calls  # noqa: E402

ROWS = 200
STYLES = 6
TEMPERATURES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
PEAK = (2, 2)  # (style, temperature index)
RANDOM_SAMPLES = 12
CONCURRENCY = 16
BAR = {"hits": 8, "share": 0.35}  # of 10 seeds; share of the grid's calls


def accuracy(style: int, temperature: int) -> float:
    ds, dt = style - PEAK[0], temperature - PEAK[1]
    return max(0.1, 0.85 - 0.05 * dt * dt - 0.075 * ds * ds - 0.1 * dt * dt * ds * ds)


def accuracy_of(body: dict) -> float:
    style = int(body["messages"][-1]["content"].split(".", 1)[0].removeprefix("Style "))
    return accuracy(style, TEMPERATURES.index(body["temperature"]))


def top_three() -> list[tuple[int, int]]:
    cells = [(s, t) for s in range(STYLES) for t in range(len(TEMPERATURES))]
    return sorted(cells, key=lambda c: -accuracy(*c))[:3]


# -- the stub, in its own process ------------------------------------------------------
def serve() -> None:
    from tests.graded_stub import graded_responder
    from tests.llm_stub import LLMStub

    stub = LLMStub(responder=graded_responder(accuracy_of)).start()
    print(stub.base_url, flush=True)
    threading.Event().wait()


def start_stub() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    return proc, proc.stdout.readline().strip()


# -- one seed ---------------------------------------------------------------------------
@dataclass
class Outcome:
    method: str
    seed: int
    calls: int
    hit: bool
    accuracy: float  # the winner's true accuracy
    wall_s: float


def make_experiment(base_url: str, seed: int):
    from endpoints.models import Endpoint
    from experiments.models import DatasetItem, Experiment
    from projects.models import Project

    project, _ = Project.objects.get_or_create(name="racing bench")
    endpoint, _ = Endpoint.objects.get_or_create(
        project=project, name="graded-stub", defaults={"base_url": base_url, "default_model": "stub-small"}
    )
    experiment = Experiment.objects.create(
        project=project,
        name=f"racing bench, seed {seed}",
        endpoint=endpoint,
        # The seed in the system prompt: each seed draws its own answers.
        pipeline=[{"name": "answer", "system": f"Bench seed {seed}.", "user": "Style 0. Question {{ q }}"}],
        parameter_space={
            "answer.user": [f"Style {s}. Question {{{{ q }}}}" for s in range(STYLES)],
            "temperature": TEMPERATURES,
        },
        scorers=[{"type": "keyword", "weight": 1, "config": {"required_present": ["{{ reference }}"]}}],
    )
    DatasetItem.objects.bulk_create(
        DatasetItem(experiment=experiment, position=i, input={"q": str(i)}, reference=f"R{i}")
        for i in range(ROWS)
    )
    return experiment


def run_method(experiment, base_url: str, method: str, seed: int) -> Outcome:
    from runs.leaderboard import leaderboard
    from runs.models import FINISHED_SWEEP_STATUSES, ResponseCache
    from runs.sweeps import SweepRequest, launch_sweep

    ResponseCache.objects.all().delete()  # each method pays for its own answers
    kind, samples = ("random", RANDOM_SAMPLES) if method == "random" else (method, None)
    request = SweepRequest(
        type=kind, n_samples=samples, seed=seed, max_concurrent=CONCURRENCY, max_tokens=10**12
    )
    before, started = stub_calls(base_url), time.perf_counter()
    sweep = launch_sweep(experiment, request)
    while sweep.status not in FINISHED_SWEEP_STATUSES:
        time.sleep(0.05)
        sweep.refresh_from_db(fields=["status"])
    wall = time.perf_counter() - started
    winner = leaderboard(experiment, n=1, sweep_id=sweep.pk)[0]["config"]
    cell = (
        int(winner["answer.user"].split(".")[0].removeprefix("Style ")),
        TEMPERATURES.index(winner["temperature"]),
    )
    return Outcome(method, seed, stub_calls(base_url) - before, cell in top_three(), accuracy(*cell), wall)


# -- the report ---------------------------------------------------------------------------
def report(outcomes: list[Outcome], seeds: int) -> bool:
    grid_calls = {o.seed: o.calls for o in outcomes if o.method == "grid"}
    print(
        f"{'seed':>5}" + "".join(f"{m + ' pick':>14}{m + ' calls':>13}" for m in ("racing", "grid", "random"))
    )
    for seed in sorted(grid_calls):
        line = f"{seed:>5}"
        for method in ("racing", "grid", "random"):
            o = next(o for o in outcomes if o.seed == seed and o.method == method)
            line += f"{o.accuracy:>10.3f} {'hit' if o.hit else '---'}{o.calls:>13}"
        print(line)
    print()
    summary = {}
    for method in ("racing", "grid", "random"):
        mine = [o for o in outcomes if o.method == method]
        hits = sum(o.hit for o in mine)
        share = sum(o.calls for o in mine) / sum(grid_calls.values())
        summary[method] = (hits, share)
        wall = sum(o.wall_s for o in mine)
        print(
            f"{method:<8} picks one of the true top three in {hits}/{seeds} seeds "
            f"(hit rate {hits / seeds:.0%}), {share:.1%} of the grid's calls, {wall:.0f} s"
        )
    return check(summary, seeds)


def check(summary: dict[str, tuple[int, float]], seeds: int) -> bool:
    (race_hits, race_share), (grid_hits, _) = summary["racing"], summary["grid"]
    needed = BAR["hits"] * seeds / 10
    checks = [
        (f"racing hits in >= {needed:g} of {seeds} seeds", race_hits >= needed),
        ("racing hits at least as often as the grid", race_hits >= grid_hits),
        (f"racing makes <= {BAR['share']:.0%} of the grid's calls", race_share <= BAR["share"]),
    ]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return all(ok for _, ok in checks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    stub, base_url = start_stub()
    try:
        setup_django("single")
        print(f"36 configurations x {ROWS} rows; truly best: {top_three()} (style, temperature index)\n")
        outcomes = []
        for seed in range(args.seeds):
            experiment = make_experiment(base_url, seed)
            outcomes += [run_method(experiment, base_url, m, seed) for m in ("racing", "grid", "random")]
    finally:
        stub.terminate()
    sys.exit(0 if report(outcomes, args.seeds) else 1)


if __name__ == "__main__":
    main()
