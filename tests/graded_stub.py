"""Answers that are right with a probability set per configuration, for racing:
the stub's responder in the racing tests and in bench/racing.py.

A dataset row asks "Question <n>"; the right answer is its reference "R<n>".
Whether an answer is right is drawn from a hash of the whole request (prompts,
temperature, top_p), so each (row, configuration) pair is an independent draw
that comes out the same every time: a sweep and its rerun see the same answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from tests.llm_stub import Responder

QUESTION_RE = re.compile(r"Question (\d+)")
WRONG = "I do not know."


def graded_rows(n: int) -> list[tuple[dict[str, Any], str]]:
    """n dataset rows (input, reference) for make_experiment."""
    return [({"q": str(i)}, f"R{i}") for i in range(n)]


def draw(body: dict[str, Any]) -> float:
    """A uniform number in [0, 1) fixed by the request."""
    key = json.dumps([body.get("messages"), body.get("temperature"), body.get("top_p")], sort_keys=True)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def graded_responder(accuracy: Callable[[dict[str, Any]], float]) -> Responder:
    """Right ("R<n>") with probability accuracy(body), else a wrong answer."""

    def respond(body: dict[str, Any]) -> str:
        found = QUESTION_RE.search(body["messages"][-1]["content"])
        if found is None:
            return WRONG
        return f"R{found.group(1)}" if draw(body) < accuracy(body) else WRONG

    return respond


def by_temperature(table: dict[float, float]) -> Responder:
    """Accuracy looked up by the request's temperature."""
    return graded_responder(lambda body: table[body.get("temperature")])
