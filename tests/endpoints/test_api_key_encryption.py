import pytest
from django.db import connection
from django.test import override_settings

from endpoints.crypto import DecryptionError
from endpoints.models import Endpoint
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db

SECRET = "sk-live-abcdef0123456789"


def raw_column(endpoint_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM endpoints_endpoint WHERE id = %s", [endpoint_id])
        return cursor.fetchone()[0]


def test_database_column_holds_no_plaintext():
    endpoint = make_endpoint(api_key=SECRET)
    stored = raw_column(endpoint.id)
    assert SECRET not in stored
    assert "abcdef" not in stored
    assert stored.startswith("gAAAA")  # a Fernet token


def test_api_key_round_trips():
    endpoint = make_endpoint(api_key=SECRET)
    assert Endpoint.objects.get(pk=endpoint.pk).get_api_key() == SECRET
    assert endpoint.has_api_key


def test_each_encryption_uses_a_fresh_nonce():
    first, second = make_endpoint("a", api_key=SECRET), make_endpoint("b", api_key=SECRET)
    assert raw_column(first.id) != raw_column(second.id)


def test_wrong_secret_key_cannot_decrypt():
    endpoint = make_endpoint(api_key=SECRET)
    with override_settings(SECRET_KEY="a-different-secret-key"):
        with pytest.raises(DecryptionError, match="cannot be decrypted with this SECRET_KEY; enter it again"):
            Endpoint.objects.get(pk=endpoint.pk).get_api_key()


def test_empty_key_means_no_key():
    endpoint = make_endpoint(api_key="")
    assert not endpoint.has_api_key
    assert endpoint.get_api_key() == ""


def test_repr_and_str_never_show_the_key():
    endpoint = make_endpoint(api_key=SECRET)
    assert SECRET not in repr(endpoint) and SECRET not in str(endpoint)
