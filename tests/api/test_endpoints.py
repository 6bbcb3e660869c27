"""/api/endpoints/: CRUD where the API key goes in and never comes out."""

import json

import pytest

from endpoints.models import Endpoint
from tests.factories import make_endpoint, make_experiment

pytestmark = pytest.mark.django_db

SECRET = "sk-very-secret-key-123"


def create(api, **fields):
    body = {"name": "local", "base_url": "http://127.0.0.1:11434/v1", "default_model": "llama3", **fields}
    return api.post("/api/endpoints/", body, format="json")


def assert_no_key(response):
    text = response.content.decode()
    assert SECRET not in text and "api_key_encrypted" not in text
    assert '"api_key"' not in text


def test_alice_creates_an_endpoint_with_a_key_she_never_sees_again(api):
    response = create(api, api_key=SECRET, extra_headers={"X-Team": "red-" + SECRET})
    assert response.status_code == 201
    assert_no_key(response)
    data = response.json()
    assert data["has_api_key"] is True and data["extra_header_names"] == ["X-Team"]
    assert "extra_headers" not in data
    endpoint = Endpoint.objects.get(pk=data["id"])
    assert endpoint.get_api_key() == SECRET and SECRET not in endpoint.api_key_encrypted
    for response in (api.get("/api/endpoints/"), api.get(f"/api/endpoints/{endpoint.pk}/")):
        assert response.status_code == 200
        assert_no_key(response)
        assert encrypted_not_in(response, endpoint)


def encrypted_not_in(response, endpoint) -> bool:
    return endpoint.api_key_encrypted not in response.content.decode()


def test_the_list_is_paginated(api):
    for n in range(3):
        make_endpoint(name=f"e{n}")
    data = api.get("/api/endpoints/").json()
    assert set(data) == {"count", "next", "previous", "results"} and data["count"] == 3


def test_updating_without_a_key_keeps_it_and_an_empty_key_clears_it(api):
    endpoint = make_endpoint(api_key=SECRET)
    response = api.patch(f"/api/endpoints/{endpoint.pk}/", {"default_model": "qwen"}, format="json")
    assert response.status_code == 200 and response.json()["has_api_key"] is True
    assert_no_key(response)
    endpoint.refresh_from_db()
    assert endpoint.get_api_key() == SECRET and endpoint.default_model == "qwen"
    body = {"name": "local", "base_url": "http://127.0.0.1:9/v1", "default_model": "qwen"}
    assert api.put(f"/api/endpoints/{endpoint.pk}/", body, format="json").json()["has_api_key"] is True
    response = api.patch(f"/api/endpoints/{endpoint.pk}/", {"api_key": ""}, format="json")
    assert response.json()["has_api_key"] is False
    endpoint.refresh_from_db()
    assert endpoint.api_key_encrypted == ""


def test_a_new_key_replaces_the_old(api):
    endpoint = make_endpoint(api_key="old")
    response = api.patch(f"/api/endpoints/{endpoint.pk}/", {"api_key": SECRET}, format="json")
    assert_no_key(response)
    endpoint.refresh_from_db()
    assert endpoint.get_api_key() == SECRET


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "ftp://example.com/v1"}, "base_url"),
        ({"adapter": "carrier-pigeon"}, "adapter"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_concurrency": -1}, "max_concurrency"),
        ({"extra_headers": {"Bad Header": "x"}}, "extra_headers"),
        ({"extra_headers": {"X-Evil": "a\r\nInjected: 1"}}, "extra_headers"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_is_a_400_that_names_the_field(api, fields, field):
    response = create(api, **fields)
    assert response.status_code == 400
    assert field in response.json()
    assert not Endpoint.objects.exists()


def test_a_refused_update_changes_nothing(api):
    endpoint = make_endpoint(api_key=SECRET)
    make_endpoint(name="taken")
    response = api.patch(
        f"/api/endpoints/{endpoint.pk}/",
        {"name": "taken", "api_key": "new", "default_model": "x"},
        format="json",
    )
    assert response.status_code == 400 and "name" in response.json()
    endpoint.refresh_from_db()
    assert (
        endpoint.name == "local"
        and endpoint.get_api_key() == SECRET
        and endpoint.default_model == "stub-small"
    )


def test_deleting_an_endpoint_in_use_is_refused(api):
    endpoint = make_endpoint()
    make_experiment(endpoint)
    response = api.delete(f"/api/endpoints/{endpoint.pk}/")
    assert response.status_code == 409 and "Capitals" in response.json()["detail"]
    assert Endpoint.objects.filter(pk=endpoint.pk).exists()


def test_deleting_an_unused_endpoint(api):
    endpoint = make_endpoint()
    assert api.delete(f"/api/endpoints/{endpoint.pk}/").status_code == 204
    assert not Endpoint.objects.exists()


def test_connection_test_lists_the_models(api, llm_stub):
    endpoint = make_endpoint(base_url=llm_stub.base_url, api_key=SECRET)
    response = api.post(f"/api/endpoints/{endpoint.pk}/test/")
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is True and report["models"] == ["stub-small", "stub-large"]
    assert report["error"] is None and report["latency_ms"] >= 0
    assert_no_key(response)


def test_a_failed_connection_test_is_a_report_not_an_error(api):
    endpoint = make_endpoint(base_url="http://127.0.0.1:9/v1", timeout_s=2)
    response = api.post(f"/api/endpoints/{endpoint.pk}/test/")
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is False and report["models"] == [] and report["error"]


def test_no_response_of_any_endpoint_route_carries_the_key(api, llm_stub):
    created = create(api, api_key=SECRET, base_url=llm_stub.base_url)
    pk = created.json()["id"]
    responses = [
        created,
        api.get("/api/endpoints/"),
        api.get(f"/api/endpoints/{pk}/"),
        api.patch(f"/api/endpoints/{pk}/", {"default_model": "m"}, format="json"),
        api.put(f"/api/endpoints/{pk}/", json.loads(created.content) | {"api_key": SECRET}, format="json"),
        api.post(f"/api/endpoints/{pk}/test/"),
        api.get("/api/schema/", {"format": "json"}),
    ]
    for response in responses:
        assert response.status_code == 200 or response.status_code == 201
        assert SECRET not in response.content.decode()


def test_a_connection_test_with_a_key_that_no_longer_decrypts_is_a_400(api, settings):
    endpoint = make_endpoint("keyed", api_key="sk-old")
    settings.SECRET_KEY = "a-rotated-secret-key-that-decrypts-nothing-stored"
    response = api.post(f"/api/endpoints/{endpoint.pk}/test/")
    assert response.status_code == 400
    assert response.json() == {
        "api_key": [
            "The key of endpoint 'keyed' cannot be decrypted with this SECRET_KEY; "
            "enter it again (Endpoints → Edit, or PATCH api_key)."
        ]
    }


@pytest.mark.parametrize(
    "stored, field",
    [({"api_key": "sk-ключ"}, "api_key"), ({"extra_headers": {"X-Team": "équipe"}}, "extra_headers")],
)
def test_a_connection_test_with_a_non_ascii_key_or_header_is_a_400_naming_it(api, stored, field):
    endpoint = make_endpoint("odd", **{k: v for k, v in stored.items() if k != "api_key"})
    if "api_key" in stored:  # stored before keys were checked on the way in
        endpoint.set_api_key(stored["api_key"])
        endpoint.save()
    response = api.post(f"/api/endpoints/{endpoint.pk}/test/")
    assert response.status_code == 400
    assert list(response.json()) == [field] and "outside ASCII" in response.json()[field][0]


@pytest.mark.parametrize(
    "fields, field",
    [({"api_key": "sk-ключ"}, "api_key"), ({"extra_headers": {"X-Team": "équipe"}}, "extra_headers")],
)
def test_a_non_ascii_key_or_header_is_refused_when_saved(api, fields, field):
    body = {"name": "odd", "base_url": "http://127.0.0.1:9/v1", **fields}
    response = api.post("/api/endpoints/", body, format="json")
    assert response.status_code == 400 and list(response.json()) == [field]
