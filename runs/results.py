"""A sweep's results as lines: one per run x dataset row (x repeat), CSV or JSONL.

A line carries the run's configuration, the row's input and reference, the last
stage's output, each scorer's value, the tokens of every stage and their latency
summed, and their cost at the endpoint's prices (Experiment.cost) when the endpoint
has prices (unpriced: no cost column). CSV cells that a spreadsheet would run as a
formula are neutralised.

Streamed in constant memory whatever the size: stage results are read in keyset
pages of PAGE rows (run, item, sample, stage), and each page's scores and dataset
rows are fetched for that page alone. Under ASGI (daphne) the lines must come from
an async iterator, or Django would gather them all into a list before sending:
`async_chunks()` pulls each chunk through the ORM's thread.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Q

from experiments.models import DatasetItem
from runs.models import Run, Score, StageResult, Sweep

PAGE = 2000
CHUNK_LINES = 500  # lines per chunk sent
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FORMATS = {"csv": "text/csv", "jsonl": "application/x-ndjson"}
Key = tuple[int, int | None, int]  # (run, item, sample)


def neutralise(value: Any) -> Any:
    """Text a spreadsheet would evaluate (=, +, -, @, tab, CR first) gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def config_keys(sweep: Sweep) -> list[str]:
    keys: set[str] = set()
    for config in Run.objects.filter(sweep=sweep).values_list("config", flat=True).iterator(chunk_size=PAGE):
        keys.update(config or {})
    return sorted(keys)


def scorer_names(sweep: Sweep) -> list[str]:
    named = [s.get("name") or s["type"] for s in sweep.experiment.scorers]
    seen = Score.objects.filter(run__sweep=sweep).values_list("scorer", flat=True).distinct().order_by()
    return named + sorted(set(seen) - set(named))


def stage_pages(sweep: Sweep) -> Iterator[list[dict[str, Any]]]:
    """Stage results in (run, item, sample, stage) order, a page at a time, by keyset."""
    fields = (
        "run_id",
        "item_id",
        "sample_index",
        "stage_index",
        "output",
        "tokens_in",
        "tokens_out",
        "latency_ms",
    )
    rows = StageResult.objects.filter(run__sweep=sweep, item__isnull=False).order_by(
        "run_id", "item_id", "sample_index", "stage_index"
    )
    after: tuple | None = None
    while True:
        page = rows.filter(_after(after)) if after else rows
        batch = list(page.values(*fields)[:PAGE])
        if not batch:
            return
        yield batch
        last = batch[-1]
        after = (last["run_id"], last["item_id"], last["sample_index"], last["stage_index"])


def _after(key: tuple) -> Q:
    run, item, sample, stage = key
    return (
        Q(run_id__gt=run)
        | Q(run_id=run, item_id__gt=item)
        | Q(run_id=run, item_id=item, sample_index__gt=sample)
        | Q(run_id=run, item_id=item, sample_index=sample, stage_index__gt=stage)
    )


def priced(sweep: Sweep) -> bool:
    endpoint = sweep.experiment.endpoint
    return endpoint is not None and endpoint.dearest_price > 0


def result_lines(sweep: Sweep) -> Iterator[dict[str, Any]]:
    """One dict per (run, item, sample), with its cost when the endpoint has prices."""
    lines = _grouped_lines(sweep)
    if not priced(sweep):
        return lines
    experiment = sweep.experiment
    return (
        {**line, "cost": experiment.cost(line["config"], line["tokens_in"], line["tokens_out"])}
        for line in lines
    )


def _grouped_lines(sweep: Sweep) -> Iterator[dict[str, Any]]:
    """A group cut by a page boundary is carried over to the next page."""
    pending: list[dict[str, Any]] = []
    for page in stage_pages(sweep):
        groups: dict[Key, list[dict]] = defaultdict(list)
        for row in pending + page:
            groups[(row["run_id"], row["item_id"], row["sample_index"])].append(row)
        keys = list(groups)
        pending = groups.pop(keys[-1])  # the page's last group may go on in the next page
        yield from _lines(groups)
    if pending:
        yield from _lines(
            {(pending[0]["run_id"], pending[0]["item_id"], pending[0]["sample_index"]): pending}
        )


def _lines(groups: dict[Key, list[dict]]) -> Iterator[dict[str, Any]]:
    if not groups:
        return
    runs = {k[0] for k in groups}
    items = {k[1] for k in groups}
    configs = dict(Run.objects.filter(pk__in=runs).values_list("pk", "config"))
    rows = {
        pk: (inp, ref)
        for pk, inp, ref in DatasetItem.objects.filter(pk__in=items).values_list("pk", "input", "reference")
    }
    scores: dict[Key, dict[str, float | None]] = defaultdict(dict)
    for run, item, sample, scorer, value in Score.objects.filter(
        run_id__in=runs, item_id__in=items, source="auto"
    ).values_list("run_id", "item_id", "sample_index", "scorer", "value"):
        scores[(run, item, sample)][scorer] = value
    for key, stages in groups.items():
        inp, ref = rows.get(key[1], ({}, ""))
        yield {
            "run_id": key[0],
            "config": configs.get(key[0]) or {},
            "item_id": key[1],
            "sample": key[2],
            "input": inp or {},
            "reference": ref,
            "output": stages[-1]["output"],
            "scores": scores.get(key, {}),
            "tokens_in": sum(s["tokens_in"] for s in stages),
            "tokens_out": sum(s["tokens_out"] for s in stages),
            "latency_ms": round(sum(s["latency_ms"] for s in stages), 3),
        }


def jsonl_stream(sweep: Sweep) -> Iterator[str]:
    for line in result_lines(sweep):
        yield json.dumps(line, ensure_ascii=False) + "\n"


def csv_stream(sweep: Sweep) -> Iterator[str]:
    config, scorers = config_keys(sweep), scorer_names(sweep)
    inputs = sweep.experiment.dataset_variables()
    header = [
        "run_id",
        *(f"config.{k}" for k in config),
        "item_id",
        "sample",
        *(f"input.{k}" for k in inputs),
    ]
    header += [
        "reference",
        "output",
        *(f"score.{s}" for s in scorers),
        "tokens_in",
        "tokens_out",
        "latency_ms",
    ]
    header += ["cost"] if priced(sweep) else []
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def emit(cells: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([neutralise(_cell(c)) for c in cells])
        return buffer.getvalue()

    yield emit(header)
    for line in result_lines(sweep):
        cells = [line["run_id"], *(line["config"].get(k) for k in config), line["item_id"], line["sample"]]
        cells += [line["input"].get(k) for k in inputs]
        cells += [line["reference"], line["output"], *(line["scores"].get(s) for s in scorers)]
        cells += [line["tokens_in"], line["tokens_out"], line["latency_ms"]]
        yield emit(cells + ([line["cost"]] if "cost" in line else []))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


def stream(sweep: Sweep, fmt: str) -> Iterator[str]:
    """The lines, CHUNK_LINES at a time."""
    lines = csv_stream(sweep) if fmt == "csv" else jsonl_stream(sweep)
    while chunk := "".join(itertools.islice(lines, CHUNK_LINES)):
        yield chunk


async def async_chunks(chunks: Iterator[str]) -> AsyncIterator[str]:
    """The same chunks for an ASGI server; the queries run in the ORM's (sync) thread."""
    while (chunk := await sync_to_async(next)(chunks, None)) is not None:
        yield chunk
