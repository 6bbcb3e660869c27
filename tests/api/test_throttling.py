"""The API answers 429 once a caller goes over its rate (API_THROTTLE_USER / _ANON)."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture
def low_rates(monkeypatch):
    # DRF binds the rates when the throttle classes are defined: patch them there.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"user": "3/minute", "anon": "2/minute"})
    cache.clear()
    yield
    cache.clear()


def test_a_user_over_the_rate_is_told_to_wait(low_rates, bob):
    client = APIClient()
    client.force_authenticate(bob)
    codes = [client.get("/api/experiments/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = client.get("/api/experiments/")
    assert "Retry-After" in response.headers


def test_the_rates_come_from_the_environment(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert rates == {"user": "100000/minute", "anon": "100000/minute"}  # pyproject's test values
