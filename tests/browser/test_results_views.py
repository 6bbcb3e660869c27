"""The result views in headless Chromium: outputs side by side (filter, paging, keys),
two runs compared from the leaderboard's ticks, costs, and a live page that moves
with each answered call. Screenshots at 1280 and 390 px of each page."""

from __future__ import annotations

import pytest

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from runs.models import Sweep, SweepStatus
from tests.api.helpers import scored_run, stage_result
from tests.browser.test_e2e import Browser, log_in
from tests.factories import make_endpoint, make_experiment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

N_ITEMS = 40
ROWS = "#matrix tbody tr[tabindex]"


@pytest.fixture
def results(alice):
    """Five configurations of a priced endpoint over 40 rows; rows 4 and 6 split them."""
    endpoint = make_endpoint("paid", base_url="https://api.example.com/v1", price_in=1000, price_out=1000)
    items = [({"country": f"Country {i}"}, f"Capital {i}") for i in range(N_ITEMS)]
    experiment = make_experiment(endpoint, items=items, name="Capitals side by side")
    sweep = Sweep.objects.create(experiment=experiment, status=SweepStatus.COMPLETED, total_runs=5)
    runs = []
    for n in range(5):
        scores = [1.0] * N_ITEMS
        if n >= 2:
            scores[3] = scores[5] = 0.0
        run = scored_run(
            experiment,
            {"temperature": n / 10},
            {"keyword": scores},
            sweep=sweep,
            tokens_in=1000 * (n + 1),
            tokens_out=0,
        )
        for i, item in enumerate(experiment.items.order_by("position")):
            wrong = n >= 2 and i in (3, 5)
            stage_result(
                run, item, output=f"It might be Atlantis, not Capital {i}" if wrong else f"Capital {i}"
            )
        runs.append(run)
    return experiment, runs


def row_count(b: Browser) -> int:
    return len(b.all(ROWS))


def test_the_matrix_pages_filters_and_searches_by_keyboard(browser, results):
    experiment, runs = results
    b = browser
    log_in(b)
    b.get(f"/experiments/{experiment.pk}/matrix/")
    b.until(lambda: b.all("#matrix"))
    assert row_count(b) == 25 and len(b.all("#matrix thead th")) == 1 + 4  # the top four
    b.shot("matrix")
    b.mobile_shot("matrix")
    # j moves to the next row, → to the next page.
    b.find(ROWS).send_keys("j")
    assert b.driver.switch_to.active_element.get_attribute("data-item") == b.all(ROWS)[1].get_attribute(
        "data-item"
    )
    b.find("body").send_keys(Keys.ARROW_RIGHT)
    b.until(lambda: "page=2" in b.driver.current_url)
    assert row_count(b) == N_ITEMS - 25
    b.find("body").send_keys(Keys.ARROW_LEFT)
    b.until(lambda: "page=1" in b.driver.current_url)
    # Where they disagree: the two rows some configurations fail.
    Select(b.find("#matrix-filter")).select_by_value("disagree")
    b.click("#matrix-form button[type=submit]")
    b.until(lambda: row_count(b) == 2)
    assert b.all("#matrix .badge.fail") and "Atlantis" in b.text("#matrix")
    b.shot("matrix-disagree")
    # Search from the keyboard: / jumps to the box.
    Select(b.find("#matrix-filter")).select_by_value("")
    b.find("body").send_keys("/")
    b.driver.switch_to.active_element.send_keys("Country 17" + Keys.ENTER)
    b.until(lambda: row_count(b) == 1)
    assert "Country 17" in b.text("#matrix tbody")


def test_two_ticked_runs_are_compared_and_costs_are_shown(browser, results):
    experiment, runs = results
    b = browser
    log_in(b)
    b.get(f"/experiments/{experiment.pk}/leaderboard/")
    b.until(lambda: b.all("#leaderboard"))
    assert b.text("#cost-total").endswith("15.00 USD")  # 1,000 + ... + 5,000 tokens at 1,000 per million
    costs = [h for h in b.all("#leaderboard thead th") if h.text == "COST"]
    assert costs, "the leaderboard has a cost column"
    assert b.find("#compare-ticked").get_attribute("disabled") is not None
    best, worse = runs[0], runs[4]
    b.click(f"input[name=run][value='{best.pk}']")
    assert b.find("#compare-ticked").get_attribute("disabled") is not None  # one is not enough
    b.click(f"input[name=run][value='{worse.pk}']")
    assert b.find("#compare-ticked").get_attribute("disabled") is None
    b.shot("leaderboard-ticked")
    b.mobile_shot("leaderboard-costs")
    b.click("#compare-ticked")
    b.until(lambda: b.all("#comparison"))
    assert b.text("#regression-count") == "2"
    assert b.text("#mean-delta") == f"{-2 / N_ITEMS:.3f}"
    assert b.text("#comparison ins") == "It might be Atlantis, not"  # the words b added are marked
    b.shot("compare")
    b.mobile_shot("compare")
    b.click("#worse-only")
    b.until(lambda: len(b.all("#comparison tbody tr[data-item]")) == 2)


@pytest.fixture
def slow_stub(llm_stub):
    from tests.runs.sweep_helpers import quality_responder

    llm_stub.responder = quality_responder
    llm_stub.latency_ms = 1500  # a run (three rows, one call at a time) takes 4.5 s
    return llm_stub


def test_the_live_page_moves_with_each_answered_call(browser, slow_stub, alice):
    endpoint = make_endpoint("slow", base_url=slow_stub.base_url)
    experiment = make_experiment(endpoint, parameter_space={"temperature": [0.0, 1.0]}, name="Slow")
    b = browser
    log_in(b)
    b.get(f"/experiments/{experiment.pk}/launch/")
    b.type("#id_max_concurrent", "1")
    b.click("button[name=preview]")
    b.until(lambda: b.all("#confirm"))
    assert b.text("#estimate-cost") == "0.00 USD"  # the endpoint is not priced
    b.click("button[name=confirm]")
    b.until(lambda: b.all("#live-sweep"))
    read = "return [document.getElementById('call-progress').value, document.getElementById('count-completed').textContent]"
    b.until(lambda: b.driver.execute_script(read)[0] >= 1, timeout=10, message="no call counted")
    calls, completed = b.driver.execute_script(read)
    assert completed == "0", "the bar moved only when a run ended"
    assert b.text("label[for=call-progress]").startswith("Calls answered")
    b.shot("sweep-calls-moving")
    b.mobile_shot("sweep-calls-moving")
    b.until(lambda: b.text("#sweep-status") == "Completed", timeout=60)
    assert b.find("#call-progress").get_attribute("value") == "6"
    assert not b.find("#sweep-controls").is_displayed()  # a finished sweep hides its controls
    b.until(lambda: len(b.all("#results tbody tr")) == 2)
    live = [r.text for r in b.all("#results tbody tr")]
    b.driver.refresh()
    b.until(lambda: len(b.all("#results tbody tr")) == 2)
    assert sorted(r.text for r in b.all("#results tbody tr")) == sorted(live)  # live rows read as served
    b.shot("sweep-finished")


def test_each_new_page_fits_a_phone(browser, results):
    experiment, runs = results
    b = browser
    log_in(b)
    pages = {
        "endpoint-prices": f"/endpoints/{experiment.endpoint_id}/edit/",
        "endpoints": "/endpoints/",
        "matrix": f"/experiments/{experiment.pk}/matrix/",
        "compare": f"/runs/compare/?a={runs[0].pk}&b={runs[4].pk}",
        "charts-cost": f"/experiments/{experiment.pk}/charts/",
        "report-svg": f"/experiments/{experiment.pk}/report/",
    }
    for name, path in pages.items():
        b.get(path)
        b.until(lambda: b.all("main"))
        b.shot(name)
        b.driver.set_window_size(390, 844)
        width = b.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide at 390 px"
        b.shot(name + "-390px")
        b.driver.set_window_size(1280, 800)
    b.get(pages["charts-cost"])
    labels = b.driver.execute_script(
        "return Array.from(document.querySelectorAll('#cost-chart text')).map(t => {"
        " const box = t.getBBox(); return [box.x, box.x + box.width]; })"
    )
    assert all(0 <= left and right <= 400 for left, right in labels)  # no axis label clipped
