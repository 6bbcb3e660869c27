"""A racing sweep launched from the form and watched live in headless Chromium:
rounds and eliminations appear as they happen, without a reload."""

from __future__ import annotations

import pytest

from tests.browser.test_e2e import browser, log_in, pytestmark, server, shots_dir  # noqa: F401
from tests.factories import make_endpoint, make_experiment
from tests.graded_stub import by_temperature, graded_rows

ACCURACY = {0.0: 1.0, 0.2: 0.97, 0.4: 0.05, 0.6: 0.05, 0.8: 0.05, 1.0: 0.0}


@pytest.fixture
def experiment(llm_stub):
    llm_stub.responder = by_temperature(ACCURACY)
    llm_stub.latency_ms = 150  # the first round takes seconds: the page is open before it closes
    return make_experiment(
        make_endpoint(name="stub", base_url=llm_stub.base_url),
        name="Race in the browser",
        pipeline=[{"name": "answer", "user": "Question {{ q }}"}],
        parameter_space={"temperature": list(ACCURACY)},
        scorers=[{"type": "keyword", "weight": 1, "config": {"required_present": ["{{ reference }}"]}}],
        items=graded_rows(40),
    )


def test_a_race_shows_its_rounds_and_eliminations_as_they_happen(browser, experiment, alice):  # noqa: F811
    b = browser
    log_in(b)
    b.get(f"/experiments/{experiment.pk}/launch/")
    b.click("input[name=type][value=racing]")
    b.type("#id_max_concurrent", "2")
    b.type("#id_seed", "3")
    b.click("button[name=preview]")
    b.until(lambda: b.all("#estimate-race"))
    assert b.text("#estimate-first-round") == "60"
    b.click("button[name=confirm]")
    b.until(lambda: b.all("#race"))
    b.driver.execute_script("window.__sameDocument = true")
    rendered = len(b.all("#race-rounds tbody tr"))
    b.until(lambda: b.text("#sweep-status") == "Completed", timeout=60)
    b.until(lambda: len(b.all("#race-rounds tbody tr")) == 3)
    assert rendered < 3 and b.driver.execute_script("return window.__sameDocument") is True
    first = b.all("#race-rounds tbody tr")[0].text.split()
    assert first[:4] == ["1", "10", "6", "4"]  # round, rows, candidates, dropped
    assert b.text("#race-calls") == "120" and b.text("#race-saved") == "120"
    b.until(lambda: len(b.all("#results .badge.dropped")) == 4)
    b.shot("race-completed")
