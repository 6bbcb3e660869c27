"""Shared helpers for sweep tests: a stub whose answers depend on the configuration."""

import time

from runs.models import FINISHED_SWEEP_STATUSES, Run, Sweep


def quality_responder(body):
    """Answers with the capital only at low temperature with the 'terse' prompt;
    otherwise rambles, so one configuration is clearly best."""
    user = body["messages"][-1]["content"]
    country = user.rsplit(" ", 1)[-1].strip("?.")
    capital = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima"}.get(country, "Nowhere")
    if body.get("temperature", 1.0) <= 0.2 and user.startswith("Terse"):
        return capital
    if body.get("temperature", 1.0) <= 0.2:
        return f"I think it is {capital} but I am not sure at all about that one."
    return "Let me think about geography for a while, there are many cities."


def wait_for_sweep(sweep: Sweep, statuses=FINISHED_SWEEP_STATUSES, timeout: float = 60) -> Sweep:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep.refresh_from_db()
        if sweep.status in statuses:
            return sweep
        time.sleep(0.05)
    raise AssertionError(f"sweep {sweep.pk} still {sweep.status} ({sweep.completed_runs}/{sweep.total_runs})")


def wait_until(predicate, timeout: float = 30, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def runs_by_status(sweep: Sweep) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Run.objects.filter(sweep=sweep).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts
