"""GET /api/cache/stats/: the response cache's table, summed."""

import pytest

from runs.models import ResponseCache
from tests.factories import team_project

pytestmark = pytest.mark.django_db


def test_an_empty_cache(api):
    assert api.get("/api/cache/stats/").json() == {
        "hits": 0,
        "misses": 0,
        "hit_rate": 0.0,
        "entries": 0,
        "storage_bytes": 0,
    }


def test_hits_are_summed_and_each_entry_counts_as_one_miss(api):
    ResponseCache.objects.create(
        project=team_project(), config_hash="a" * 64, response_text="Paris", hit_count=5
    )
    ResponseCache.objects.create(
        project=team_project(), config_hash="b" * 64, response_text="Tokyo!", hit_count=1
    )
    ResponseCache.objects.create(
        project=team_project(), config_hash="c" * 64, response_text="Lima", hit_count=0
    )
    stats = api.get("/api/cache/stats/").json()
    assert stats == {
        "hits": 6,
        "misses": 3,
        "hit_rate": pytest.approx(6 / 9),
        "entries": 3,
        "storage_bytes": 15,
    }
