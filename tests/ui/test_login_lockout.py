"""Repeated wrong passwords lock a user name out from that address (django-axes)."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def log_in(client: Client, password: str):
    return client.post("/accounts/login/", {"username": "bob", "password": password})


def test_the_right_password_after_too_many_wrong_ones_is_refused(bob, settings):
    client = Client()
    codes = [log_in(client, "wrong").status_code for _ in range(settings.AXES_FAILURE_LIMIT)]
    assert codes == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]  # the form again, then locked
    response = log_in(client, "pw-bob")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_few_wrong_passwords_do_not_lock_bob_out(bob, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, "wrong")
    assert log_in(client, "pw-bob").status_code == 302


def test_the_limit_is_a_setting(bob, settings):
    settings.AXES_FAILURE_LIMIT = 2
    client = Client()
    log_in(client, "wrong")
    log_in(client, "wrong")
    assert log_in(client, "pw-bob").status_code == 429
