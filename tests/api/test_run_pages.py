"""/api/runs/ pages: cursors that walk every run once in any ordering, `?page=`
kept working, and a count that stops at COUNT_LIMIT instead of counting all."""

import pytest

from runs import pagination
from runs.models import RunStatus
from tests.api.helpers import scored_run
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db

ORDERINGS = ["-score", "score", "tokens", "-tokens", "latency", "-latency", "date", "-date"]


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(pagination, "PAGE_SIZE", 3)
    monkeypatch.setattr(pagination, "COUNT_LIMIT", 5)


@pytest.fixture
def runs(db):
    """Eleven runs with ties on every figure and unscored ones among them."""
    experiment = make_experiment(make_endpoint())
    made = []
    for n in range(11):
        status = RunStatus.FAILED if n % 4 == 3 else RunStatus.COMPLETED
        values = [[1, 1, 0][n % 3]] * 3 if status == RunStatus.COMPLETED else [None] * 3
        made.append(
            scored_run(
                experiment, {"n": n}, {"keyword": values}, status=status, tokens_in=n % 2, latency_ms=n % 3
            )
        )
    return made


def walk(api, params: dict) -> tuple[list[int], list[dict]]:
    """Every id the `next` links lead to, and each page's body."""
    response = api.get("/api/runs/", params)
    seen, pages = [], []
    while True:
        assert response.status_code == 200, response.json()
        data = response.json()
        pages.append(data)
        seen += [run["id"] for run in data["results"]]
        if not data["next"]:
            return seen, pages
        response = api.get(data["next"])


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_cursor_pages_walk_every_run_once_in_the_order_of_one_page(api, runs, small_pages, ordering):
    pagination.PAGE_SIZE = 50
    whole = [run["id"] for run in api.get("/api/runs/", {"ordering": ordering}).json()["results"]]
    pagination.PAGE_SIZE = 3
    seen, pages = walk(api, {"ordering": ordering})
    assert seen == whole and len(seen) == len(runs) == len(set(seen))
    assert len(pages) == 4 and all("cursor=" in page["next"] for page in pages[:-1])


def test_the_count_stops_at_the_limit_and_is_exact_below_it(api, runs, small_pages):
    assert api.get("/api/runs/").json()["count"] is None  # 11 runs > COUNT_LIMIT of 5
    assert api.get("/api/runs/", {"status": "failed"}).json()["count"] == 2  # runs 3 and 7


def test_page_numbers_still_work(api, runs, small_pages):
    first = api.get("/api/runs/", {"ordering": "-score"}).json()
    second = api.get("/api/runs/", {"ordering": "-score", "page": 2}).json()
    assert [r["id"] for r in second["results"]] == [r["id"] for r in api.get(first["next"]).json()["results"]]
    assert "page=3" in second["next"] and "page=1" in second["previous"]
    assert api.get("/api/runs/", {"page": 99}).json()["results"] == []


@pytest.mark.parametrize(
    "params,field",
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": pagination.encode_cursor("high", 1), "ordering": "-score"}, "cursor"),
        ({"cursor": pagination.encode_cursor(1.5, 1), "ordering": "date"}, "cursor"),
        ({"page": "0"}, "page"),
        ({"page": str(2**63)}, "page"),
    ],
)
def test_a_bad_cursor_or_page_is_a_400_naming_it(api, runs, params, field):
    response = api.get("/api/runs/", params)
    assert response.status_code == 400 and field in response.json()
