"""Pages of the run list that cost the same on page 1 and page 20,000.

`?cursor=` (the `next` link) continues after the last row shown: each page is a
range read of the index matching its ordering (runs/models.py), never an OFFSET.
`?page=N` still works (an OFFSET: fine for the first pages, slower deep down).
`count` is exact up to COUNT_LIMIT runs and null beyond it, so a page never
counts a million rows.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

PAGE_SIZE = 50
COUNT_LIMIT = 10_000
MAX_PAGE = 1_000_000  # its OFFSET stays a number every database takes


def encode_cursor(value: Any, last_id: int) -> str:
    text = json.dumps([value.isoformat() if hasattr(value, "isoformat") else value, last_id])
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_cursor(cursor: str, field: str) -> tuple[Any, int]:
    """(value, id) of the last row shown, checked against the ordering's field."""
    try:
        value, last_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(last_id, int) or not 0 < last_id < 2**63:
            raise ValueError
        value = cursor_value(value, field)
    except (ValueError, TypeError):
        raise ValidationError({"cursor": ["Not a cursor of this list; follow the `next` link."]}) from None
    return value, last_id


def cursor_value(value: Any, field: str) -> Any:
    if field == "created_at":
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            raise ValueError
        return parsed
    if value is None and field == "weighted_score":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError
    if abs(value) >= 2**63:
        raise ValueError
    return value


def after(runs: QuerySet, field: str, descending: bool, value: Any, last_id: int) -> Iterator[QuerySet]:
    """The rows after (value, last_id) in the list's order, as up to three range
    reads: the rest of the tie, the rows beyond it, then the unscored (NULLS LAST)."""
    beyond = "lt" if descending else "gt"
    nulls = runs.filter(**{f"{field}__isnull": True})
    if value is None:
        yield nulls.filter(**{f"id__{beyond}": last_id})
        return
    yield runs.filter(**{field: value, f"id__{beyond}": last_id})
    yield runs.filter(**{f"{field}__{beyond}": value})
    yield nulls


class RunPagination(BasePagination):
    """Cursor pages over an ordered run list; `paginate(runs, field, descending)`."""

    def paginate(self, runs: QuerySet, field: str, descending: bool, request: Request) -> list:
        self.request, self.field = request, field
        self.count = self.counted(runs)
        page = request.query_params.get("page")
        if page is not None:
            return self.numbered(runs, page)
        cursor = request.query_params.get("cursor")
        parts = after(runs, field, descending, *decode_cursor(cursor, field)) if cursor else iter([runs])
        rows: list = []
        for part in parts:
            rows += part[: PAGE_SIZE + 1 - len(rows)]
            if len(rows) > PAGE_SIZE:
                break
        self.next = self.cursor_link(rows[PAGE_SIZE - 1]) if len(rows) > PAGE_SIZE else None
        self.previous = None
        return rows[:PAGE_SIZE]

    def numbered(self, runs: QuerySet, page: str) -> list:
        if not page.isdigit() or not 1 <= int(page) <= MAX_PAGE:
            raise ValidationError(
                {"page": [f"A page number from 1 to {MAX_PAGE:,}; deeper, follow `next` links."]}
            )
        number = int(page)
        rows = list(runs[(number - 1) * PAGE_SIZE : number * PAGE_SIZE + 1])
        url = self.request.build_absolute_uri()
        self.next = replace_query_param(url, "page", number + 1) if len(rows) > PAGE_SIZE else None
        self.previous = replace_query_param(url, "page", number - 1) if number > 1 else None
        return rows[:PAGE_SIZE]

    def counted(self, runs: QuerySet) -> int | None:
        found = runs.order_by()[: COUNT_LIMIT + 1].count()
        return found if found <= COUNT_LIMIT else None

    def cursor_link(self, last: Any) -> str:
        url = remove_query_param(self.request.build_absolute_uri(), "page")
        return replace_query_param(url, "cursor", encode_cursor(getattr(last, self.field), last.pk))

    def get_paginated_response(self, data: list) -> Response:
        return Response({"count": self.count, "next": self.next, "previous": self.previous, "results": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        link = {"type": "string", "nullable": True, "format": "uri"}
        return {
            "type": "object",
            "required": ["count", "results"],
            "properties": {
                "count": {"type": "integer", "nullable": True, "description": f"Null beyond {COUNT_LIMIT}."},
                "next": link,
                "previous": link,
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        return [
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "page", "in": "query", "required": False, "schema": {"type": "integer"}},
        ]
