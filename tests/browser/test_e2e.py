"""The whole journey in a real headless Chromium, against Daphne (HTTP and
WebSockets) on the test database, with a loopback LLM stub that makes one
configuration clearly best.

Needs /usr/bin/chromium and /usr/bin/chromedriver: `bash scripts/install_system_deps.sh`.
Screenshots of every step go to test-artifacts/screenshots/<timestamp>/ (printed).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest
from daphne.testing import DaphneProcess
from django.conf import settings
from django.db import connections

from runs.models import Run, Score, ScoreSource
from tests.runs.sweep_helpers import quality_responder

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="needs Debian's chromium and chromium-driver: bash scripts/install_system_deps.sh",
    ),
]
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT_S = 30
PAGE_CHANGING = (NoSuchElementException, StaleElementReferenceException)
CSV = "country,capital,reference\nFrance,Paris,Paris\nJapan,Tokyo,Tokyo\nPeru,Lima,Lima\n"


# -- the server: Daphne in a forked process, on the test database -------------------------
def asgi_application():
    """The production application as it is: it serves its own static files."""
    from promptlooper_site.asgi import application

    return application


def in_server_process() -> None:
    """Runs in the forked server: it must open its own database connection."""
    connections.close_all()


@pytest.fixture
def server(transactional_db):
    connections.close_all()  # the child must open its own connection to the test database
    process = DaphneProcess("127.0.0.1", asgi_application, setup=in_server_process)
    process.start()
    if not process.ready.wait(WAIT_S):
        process.terminate()
        pytest.fail("Daphne did not start: " + ("" if process.errors.empty() else process.errors.get()[1]))
    yield f"http://127.0.0.1:{process.port.value}"
    process.terminate()
    process.join(10)


# -- the browser ----------------------------------------------------------------------------
class Browser:
    def __init__(self, base_url: str, shots: Path, downloads: Path):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        for flag in (
            "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking "
            "--disable-component-update --disable-sync --no-first-run --window-size=1280,800"
        ).split():
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
        service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        self.base_url, self.shots, self.count = base_url, shots, 0

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def get(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def type(self, css: str, text: str, clear: bool = True) -> None:
        element = self.find(css)
        if clear:
            element.clear()
        element.send_keys(text)

    def click(self, css: str) -> None:
        element = self.find(css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def until(self, condition, timeout: float = WAIT_S, message: str = ""):
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.1, ignored_exceptions=PAGE_CHANGING)
        return wait.until(lambda d: condition(), message)

    def text(self, css: str) -> str:
        return self.find(css).text

    def shot(self, name: str) -> None:
        self.count += 1
        self.driver.save_screenshot(str(self.shots / f"{self.count:02d}-{name}.png"))

    def mobile_shot(self, name: str) -> None:
        self.driver.set_window_size(390, 844)
        time.sleep(0.2)
        self.shot(name + "-390px")
        self.driver.set_window_size(1280, 800)


@pytest.fixture
def shots_dir(capsys) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(settings.BASE_DIR) / "test-artifacts" / "screenshots" / stamp
    path.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():  # shown even when pytest captures the output
        print(f"\nscreenshots: {path}")
    return path


@pytest.fixture
def browser(server, shots_dir, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    b = Browser(server, shots_dir, downloads)
    b.downloads = downloads
    yield b
    b.quit()


@pytest.fixture
def stub(llm_stub):
    llm_stub.responder = quality_responder
    llm_stub.latency_ms = 250  # slow enough to watch the progress bar move
    return llm_stub


# -- the journey -------------------------------------------------------------------------------
def test_from_login_to_a_rated_best_run_and_its_export(browser, stub, alice, tmp_path):
    log_in(browser)
    add_endpoint(browser, stub.base_url)
    experiment_url = create_experiment(browser)
    import_dataset(browser, tmp_path)
    launch(browser, experiment_url)
    watch_the_sweep(browser)
    best_run = open_the_best_run(browser)
    rate(browser, best_run)
    look_at_charts_and_report(browser, experiment_url)
    download_the_export(browser, experiment_url, best_run)


def log_in(b: Browser) -> None:
    b.get("/")
    b.until(lambda: "/accounts/login/" in b.driver.current_url)
    b.shot("login")
    b.type("#id_username", "alice")
    b.type("#id_password", "pw-alice" + Keys.ENTER)
    b.until(lambda: b.all("h1") and b.text("h1") == "Experiments")
    # Keyboard focus is visible: tab to the first control and read its outline.
    b.find("body").send_keys(Keys.TAB)
    outline = b.driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    b.shot("dashboard-empty")


def add_endpoint(b: Browser, base_url: str) -> None:
    b.get("/endpoints/new/")
    b.type("#id_name", "stub")
    b.type("#id_base_url", base_url)
    b.type("#id_default_model", "stub-small")
    b.type("#id_api_key", "sk-very-secret")
    b.shot("endpoint-form")
    b.click("button.primary")
    b.until(lambda: b.all("#key-state") and b.text("#key-state") == "set")
    assert b.find("#id_api_key").get_attribute("value") == ""
    assert "sk-very-secret" not in b.driver.page_source
    b.click("#test-connection")
    b.until(lambda: "Connected to 'stub'" in b.text(".messages"))
    assert "stub-small" in b.text(".messages")
    b.shot("endpoint-connected")


def create_experiment(b: Browser) -> str:
    b.get("/experiments/new/")
    b.type("#id_name", "Capitals in the browser")
    Select(b.find("#id_endpoint")).select_by_visible_text("stub")
    b.type("#id_stages-0-name", "answer")
    # A broken template is reported live, naming the stage and the line.
    b.type("#id_stages-0-user", "Capital of\n{{ country ")
    b.until(lambda: "line 2" in b.text("#id_stages-0-user_status"))
    assert "Stage 'answer' user template" in b.text("#id_stages-0-user_status")
    b.shot("editor-template-error")
    b.type("#id_stages-0-user", "Capital of {{ country }}?")
    b.until(lambda: "valid" in b.text("#id_stages-0-user_status"))
    # A second stage, moved above the first, then removed again.
    b.click("[data-formset=stages] [data-add-form]")
    b.type("#id_stages-1-name", "draft")
    b.type("#id_stages-1-user", "Draft: {{ country }}")
    b.click("[data-formset=stages] [data-forms] > :nth-child(2) [data-move=up]")
    assert (
        b.find("[data-formset=stages] [data-forms] > :first-child input[name$='-name']").get_attribute(
            "value"
        )
        == "draft"
    )
    b.click("#id_stages-1-DELETE")
    add_row(b, "params", {"key": "temperature", "values": "0.0, 1.0"})
    add_prompt_variants(
        b, "answer.user", ["Terse: capital of {{ country }}", "Please tell me the capital of {{ country }}"]
    )
    add_row(b, "scorers", {"type": "keyword"})
    set_options(b, {"required_present": "{{ capital }}"})
    add_row(b, "scorers", {"type": "llm_judge", "weight": "0"})
    assert b.find("[data-formset=scorers] [data-forms] > :nth-child(2) [data-cost-badge]").is_displayed()
    b.click("#id_scorers-1-DELETE")
    add_row(b, "scorers", {"type": "format", "name": "length"})
    set_options(b, {"check": "length", "min_tokens": "1", "max_tokens": "3"})
    assert json.loads(b.find("#id_scorers-2-config").get_attribute("value")) == {
        "check": "length",
        "min_tokens": 1,
        "max_tokens": 3,
    }
    b.driver.execute_script("document.querySelector('[data-formset=scorers]').scrollIntoView()")
    b.shot("scorer-editor")
    b.mobile_shot("scorer-editor")
    b.shot("editor-filled")
    b.mobile_shot("editor-filled")
    b.click("#experiment-form button[type=submit]")
    b.until(lambda: b.text("h1") == "Capitals in the browser")
    b.shot("experiment-overview")
    return b.driver.current_url.removeprefix(b.base_url)


def add_row(b: Browser, formset: str, values: dict) -> None:
    b.click(f"[data-formset={formset}] [data-add-form]")
    row = b.all(f"[data-formset={formset}] [data-forms] > [data-form]")[-1]
    for name, value in values.items():
        field = row.find_element(By.CSS_SELECTOR, f"[name$='-{name}']")
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.clear()
            field.send_keys(value)


def add_prompt_variants(b: Browser, key: str, variants: list[str]) -> None:
    """A template parameter: one text area per variant, added with the button."""
    add_row(b, "params", {"key": key})
    row = b.all("[data-formset=params] [data-forms] > [data-form]")[-1]
    assert not row.find_element(By.CSS_SELECTOR, "textarea[name$='-values']").is_displayed()
    for n, text in enumerate(variants):
        if n:
            row.find_element(By.CSS_SELECTOR, ".variants > button").click()
        row.find_elements(By.CSS_SELECTOR, ".variant-list textarea")[n].send_keys(text)


def set_options(b: Browser, options: dict[str, str]) -> None:
    """Fill the last scorer's structured options: fields generated from its typed Options."""
    row = b.all("[data-formset=scorers] [data-forms] > [data-form]")[-1]
    assert not row.find_element(By.CSS_SELECTOR, "[name$='-config']").is_displayed()  # no JSON to write
    for name, value in options.items():
        field = row.find_element(By.CSS_SELECTOR, f".scorer-options [data-option='{name}']")
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.send_keys(value)


def import_dataset(b: Browser, tmp_path: Path) -> None:
    b.click("a[href$='/dataset/']")
    path = tmp_path / "capitals.csv"
    path.write_text(CSV)
    b.find("#id_file").send_keys(str(path))
    b.click("form[enctype] button[type=submit]")
    b.until(lambda: b.all("#import-preview"))
    assert "3 rows read" in b.text("#import-summary")
    b.shot("import-preview")
    b.click("form[action$='/confirm/'] button")
    b.until(lambda: b.all("#dataset-table"))
    assert len(b.all("#dataset-table tbody tr")) == 3
    b.shot("dataset")


def launch(b: Browser, experiment_url: str) -> None:
    b.get(experiment_url + "launch/")
    b.type("#id_max_concurrent", "1")
    b.click("button[name=preview]")
    b.until(lambda: b.all("#confirm"))
    assert b.text("#estimate-runs") == "4" and b.text("#estimate-calls") == "12"
    b.shot("launch-confirmation")
    b.click("button[name=confirm]")
    b.until(lambda: b.all("#live-sweep"))


def watch_the_sweep(b: Browser) -> None:
    b.driver.execute_script("window.__sameDocument = true")
    b.until(lambda: b.driver.execute_script("return window.promptLooperLive.connected"))
    b.until(lambda: int(b.find("#sweep-progress").get_attribute("value")) >= 1)
    b.shot("sweep-running")
    # A dropped connection reconnects with ?after=<last id> and catches up.
    b.driver.execute_script("window.promptLooperLive.drop()")
    b.until(lambda: "reconnecting" in b.text("#conn-state").lower() or b.text("#sweep-status") == "Completed")
    b.until(lambda: b.text("#sweep-status") == "Completed", message="the sweep never showed as completed")
    assert b.driver.execute_script("return window.promptLooperLive.connections") == 2
    assert b.text("#progress-pct") == "100%"
    assert (
        b.find("#sweep-progress").get_attribute("value")
        == b.find("#sweep-progress").get_attribute("max")
        == "4"
    )
    b.until(lambda: len(b.all("#results tbody tr")) == 4)
    assert b.driver.execute_script("return window.__sameDocument") is True  # never reloaded
    assert b.find("button[data-action=pause]").get_attribute("disabled") is not None
    assert b.find("#results tbody tr.best")
    b.shot("sweep-completed")
    b.mobile_shot("sweep-completed")


def open_the_best_run(b: Browser) -> Run:
    b.click("#finished-links a.primary")
    b.until(lambda: b.all("#leaderboard"))
    # Sort by score with the keyboard: ascending, then descending puts the best on top.
    score = [h for h in b.all("#leaderboard thead th") if h.text.startswith("SCORE")][0]
    button = score.find_element(By.CSS_SELECTOR, "button")
    button.send_keys(Keys.ENTER)
    assert score.get_attribute("aria-sort") == "ascending"
    button.send_keys(Keys.ENTER)
    assert score.get_attribute("aria-sort") == "descending"
    assert b.all("#leaderboard thead .varies")  # the parameters that differ are highlighted
    b.shot("leaderboard")
    best = Run.objects.order_by("-weighted_score", "tokens_in", "id").first()
    assert best.config["temperature"] == 0.0 and best.config["answer.user"].startswith("Terse")
    b.click("#leaderboard tbody tr:first-child th a")
    b.until(lambda: b.text("h1").startswith(f"Run #{best.pk}"))
    assert "Paris" in b.text(".item .reference")
    b.shot("run-detail")
    b.mobile_shot("run-detail")
    return best


def rate(b: Browser, run: Run) -> None:
    form = b.all("form.rating-form")[0]
    label = form.find_element(By.CSS_SELECTOR, "label[for$='rating_8']")  # the 9th choice: 9/10
    b.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", label)
    label.click()
    form.find_element(By.CSS_SELECTOR, "textarea").send_keys("Short and right.")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    b.until(lambda: "Saved your rating of 9/10" in b.text(".messages"))
    rating = Score.objects.get(run=run, source=ScoreSource.HUMAN)
    assert rating.value == pytest.approx(8 / 9) and rating.author.username == "alice"
    assert rating.comment == "Short and right."
    b.shot("run-rated")


def look_at_charts_and_report(b: Browser, experiment_url: str) -> None:
    b.get(experiment_url + "charts/")
    b.until(lambda: b.all("#tokens-chart"))
    assert b.all("#tokens-chart circle.pick") and b.all("#histogram rect.bar")
    b.shot("charts")
    b.get(experiment_url + "report/")
    b.until(lambda: b.all(".report table"))
    assert "Top 5 configurations" in b.text(".report")
    b.shot("report")
    b.get("/")
    b.shot("dashboard")
    b.mobile_shot("dashboard")


def download_the_export(b: Browser, experiment_url: str, run: Run) -> None:
    b.get(experiment_url + "leaderboard/")
    b.click(".exports a[href*='export.json']")
    target = b.downloads / f"promptlooper-{run.experiment_id}-run-{run.pk}.json"
    b.until(lambda: target.exists() and target.stat().st_size > 0, message="the export was not downloaded")
    exported = json.loads(target.read_text())
    assert exported["metadata"]["run_id"] == run.pk
    assert exported["stages"][0]["user"].startswith("Terse")
