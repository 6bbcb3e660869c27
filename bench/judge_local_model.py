"""The bundled SmolLM2 as a judge (not a test): python bench/judge_local_model.py

A two-stage pipeline (draft, then answer) over a dozen capitals runs on SmolLM2-135M
under llama.cpp, and SmolLM2 judges the answers, asked `--samples` times each at
`--temperature`: once with structured output (the judge's default) and once with
plain requests. For each it prints how many judge replies parsed, how many outputs
it could not rate, the response_format form the server took, and the rating spread.
Figures are whatever the model gives; nothing here asserts them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.gateway import Gateway  # noqa: E402
from engine.local_model import LocalModelServer  # noqa: E402
from engine.runner import InMemoryResultSink, RunOutcome, RunSpec, run_single  # noqa: E402
from engine.types import EndpointConfig, Item, ScorerSpec, Stage  # noqa: E402

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Peru", "Lima"),
    ("Italy", "Rome"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Kenya", "Nairobi"),
    ("Norway", "Oslo"),
    ("Chile", "Santiago"),
    ("Spain", "Madrid"),
    ("India", "New Delhi"),
    ("Australia", "Canberra"),
]
STAGES = [
    Stage(name="draft", user="Write one sentence about {{ country }}.", params={"max_tokens": 40}),
    Stage(
        name="answer",
        user="Using this note: {{ previous }}\nWhat is the capital of {{ country }}? Answer in one sentence.",
        params={"max_tokens": 40},
    ),
]


def items() -> list[Item]:
    return [
        Item(id=n, input={"country": c}, reference=f"The capital of {c} is {city}.", position=n)
        for n, (c, city) in enumerate(CAPITALS)
    ]


async def judged_run(endpoint: EndpointConfig, samples: int, temperature: float, structured: bool) -> dict:
    config = {"samples": samples, "temperature": temperature, "structured": structured}
    judge = ScorerSpec(type="llm_judge", name="judge", config=config)
    spec = RunSpec(
        run_id=1, experiment_id=1, sweep_id=None, config={"temperature": 0.0},
        stages=STAGES, items=items(), scorers=[judge], endpoint=endpoint,
    )  # fmt: skip
    sink = InMemoryResultSink()
    started = time.perf_counter()
    async with Gateway(max_concurrent=1) as gateway:
        outcome = await run_single(spec, gateway, sink)
    return figures(outcome, sink, structured, time.perf_counter() - started)


def figures(outcome: RunOutcome, sink: InMemoryResultSink, structured: bool, seconds: float) -> dict:
    scores = [s for s in sink.scores if s.scorer == "judge"]
    ratings = [r for s in scores for r in s.details.get("ratings", [])]
    spreads = [s.details["spread"] for s in scores if s.details.get("spread") is not None]
    stats = outcome.scorer_stats["judge"]
    return {
        "structured": structured,
        "status": outcome.status,
        "error": outcome.error,
        "outputs": len(scores),
        "replies": len(ratings),
        "replies_parsed": sum(r is not None for r in ratings),
        "outputs_rated": stats["scored"],
        "outputs_not_rated": stats["errors"],
        "forms": sorted({str(s.details.get("structured")) for s in scores}),
        "mean_rating": statistics.fmean(r for r in ratings if r is not None) if any(ratings) else None,
        "mean_spread": stats["mean_spread"],
        "max_spread": max(spreads) if spreads else None,
        "example_replies": [s.details.get("raw") for s in scores[:3]],
        "answers": [r.output for r in sink.stage_results if r.stage_name == "answer"][:3],
        "seconds": round(seconds, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.8)
    args = parser.parse_args()
    with LocalModelServer() as server:
        endpoint = EndpointConfig(
            name="local-smollm2", base_url=server.base_url, default_model=server.alias,
            max_concurrency=1, timeout_s=120,
        )  # fmt: skip
        for structured in (True, False):
            result = await judged_run(endpoint, args.samples, args.temperature, structured)
            print(json.dumps(result, ensure_ascii=False, indent=1), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
