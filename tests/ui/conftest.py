import pytest
from django.test import Client


@pytest.fixture
def client(client: Client, alice) -> Client:
    """pytest-django's test client, logged in as alice (the team's admin, a superuser)."""
    client.force_login(alice)
    return client
