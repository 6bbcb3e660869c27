"""Dataset rows from CSV or JSONL, and writing them to an experiment.

CSV: a header row; a `reference` column (any case) is the expected answer, every
other column becomes a template variable of that name. JSONL: one object a line,
either `{"input": {...}, "reference": "..."}` or flat `{"country": ..., "reference": ...}`.
A bad row stops the import with its line number; nothing is written until every
row has parsed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Literal, TypedDict

from django.db import transaction

from experiments.models import DatasetItem, Experiment

Format = Literal["csv", "jsonl"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl")
MODES = ("append", "replace")
REFERENCE = "reference"


class Row(TypedDict):
    input: dict[str, Any]
    reference: str


class DatasetImportError(ValueError):
    """A file that cannot be imported; the message names the line."""


def detect_format(filename: str, content_type: str, text: str) -> Format:
    name, kind = filename.lower(), content_type.lower()
    if name.endswith(".csv") or "csv" in kind:
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")) or "json" in kind:
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_IMPORT_ROWS = 10_000
MAX_DEPTH = 32  # lists and objects inside a row


def read_dataset(
    data: bytes | str, filename: str = "", content_type: str = "", fmt: Format | None = None
) -> tuple[list[Row], Format]:
    """An uploaded file's rows and format, within the size limits (the API and the UI alike)."""
    if len(data) > MAX_IMPORT_BYTES:
        raise DatasetImportError(f"The file is over {MAX_IMPORT_BYTES // 1024 // 1024} MB; split it.")
    text = decode(data)
    fmt = fmt or detect_format(filename, content_type, text)
    rows = parse_dataset(text, fmt)
    check_row_count(len(rows), "The file")
    return rows, fmt


def check_row_count(count: int, what: str = "The dataset") -> None:
    if count > MAX_IMPORT_ROWS:
        raise DatasetImportError(f"{what} has {count:,} rows; at most {MAX_IMPORT_ROWS:,} at once.")


def decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetImportError(f"Line {line}: the file is not UTF-8 text; save it as UTF-8.") from None


def parse_dataset(text: str, fmt: Format) -> list[Row]:
    rows = parse_csv(text) if fmt == "csv" else parse_jsonl(text)
    if not rows:
        raise DatasetImportError("The file has no data rows.")
    return rows


def parse_csv(text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        columns = _header(header)
        return [_csv_row(columns, values, reader.line_num) for values in reader if any(values)]
    except csv.Error as exc:
        raise DatasetImportError(f"Line {reader.line_num}: {exc}.") from None


def _header(header: list[str]) -> list[str]:
    columns = [name.strip() for name in header]
    for number, name in enumerate(columns, start=1):
        if not name:
            raise DatasetImportError(f"Line 1: column {number} has no name; every column needs one.")
    seen = [name.lower() if name.lower() == REFERENCE else name for name in columns]
    duplicates = sorted({name for name in seen if seen.count(name) > 1})
    if duplicates:
        raise DatasetImportError(f"Line 1: column {duplicates[0]!r} appears twice.")
    return seen


def _csv_row(columns: list[str], values: list[str], line: int) -> Row:
    if len(values) != len(columns):
        raise DatasetImportError(f"Line {line}: expected {len(columns)} fields, found {len(values)}.")
    fields = dict(zip(columns, values, strict=True))
    reference = fields.pop(REFERENCE, "")
    _check_row(fields, reference, line)
    return Row(input=fields, reference=reference)


def parse_jsonl(text: str) -> list[Row]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        rows.append(_json_row(_json_value(raw, line), line))
    return rows


def _json_value(raw: str, line: int) -> Any:
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise DatasetImportError(f"Line {line}: not valid JSON ({exc.msg}, column {exc.colno}).") from None
    except RecursionError:
        raise DatasetImportError(f"Line {line}: nested deeper than {MAX_DEPTH} levels; flatten it.") from None
    except ValueError as exc:  # NaN, Infinity, or an integer past Python's digit limit
        raise DatasetImportError(f"Line {line}: {exc}.") from None
    problem = json_problem(value)
    if problem:
        raise DatasetImportError(f"Line {line}: {problem}.")
    return value


def _no_constant(name: str) -> Any:
    # JSON has no NaN or Infinity (Python accepts them); PostgreSQL and browsers refuse them.
    raise ValueError(f"{name} is not a JSON number; write null or a string instead")


def json_problem(value: Any) -> str | None:
    """Why `value` cannot be stored as a row's JSON (None: it can): nested deeper than
    MAX_DEPTH, NaN or Infinity (PostgreSQL and browsers refuse them), or not JSON at
    all (a YAML date). Walked without recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth + 1 > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels; flatten it"
            children = item.values() if isinstance(item, dict) else item
            stack += [(child, depth + 1) for child in children]
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{item} is not a JSON number; write null or a string instead"
        elif item is not None and not isinstance(item, str | int | float):
            return f"{item!r} is not a JSON value ({type(item).__name__}); quote it"
    return None


def row_problem(variables: dict[str, Any], reference: str) -> str | None:
    """What keeps a row from being stored (None: nothing): the checks of every import."""
    # PostgreSQL cannot store NUL characters in text or JSON.
    if has_nul(variables) or "\x00" in reference:
        return "contains a NUL character"
    return json_problem(variables)


def reference_text(value: Any) -> str | None:
    """A row's reference as text: numbers as written, null as empty; None if it is not text."""
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else None


def _json_row(obj: Any, line: int) -> Row:
    if not isinstance(obj, dict):
        raise DatasetImportError(
            f'Line {line}: expected an object like {{"input": {{...}}, "reference": "..."}}.'
        )
    if isinstance(obj.get("input"), dict) and set(obj) <= {"input", REFERENCE}:
        variables, reference = dict(obj["input"]), obj.get(REFERENCE, "")
    else:
        variables = {k: v for k, v in obj.items() if k != REFERENCE}
        reference = obj.get(REFERENCE, "")
    text = reference_text(reference)
    if text is None:
        raise DatasetImportError(f"Line {line}: reference must be text, got {type(reference).__name__}.")
    _check_row(variables, text, line)
    return Row(input=variables, reference=text)


def _check_row(variables: dict[str, Any], reference: str, line: int) -> None:
    problem = row_problem(variables, reference)
    if problem:
        raise DatasetImportError(f"Line {line}: {problem}.")


def has_nul(value: Any) -> bool:
    """True if a NUL hides anywhere in a JSON value (keys included)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


def write_rows(experiment: Experiment, rows: list[Row], mode: str = "replace") -> int:
    """Replace the experiment's rows, or append after the last; returns the row count now."""
    with transaction.atomic():
        if mode == "replace":
            experiment.items.all().delete()
            start = 0
        else:
            start = experiment.next_position()
        DatasetItem.objects.bulk_create(
            (
                DatasetItem(
                    experiment=experiment,
                    position=start + i,
                    input=row["input"],
                    reference=row.get("reference", ""),
                )
                for i, row in enumerate(rows)
            ),
            batch_size=1000,
        )
        return experiment.items.count()
