"""Endpoint pages: the API key is write-only, and the connection can be tested."""

import pytest
from django.urls import reverse

from endpoints.models import Endpoint
from tests.factories import make_endpoint

pytestmark = pytest.mark.django_db


SECRET = "sk-live-do-not-leak-123"


def form_data(**overrides) -> dict:
    data = {
        "name": "local",
        "base_url": "http://127.0.0.1:11434/v1",
        "adapter": "openai",
        "default_model": "llama3",
        "embedding_model": "",
        "timeout_s": "60",
        "max_concurrency": "0",
        "extra_headers": "{}",
        "api_key": "",
    }
    return data | overrides


def test_adding_an_endpoint_stores_the_key_encrypted_and_never_shows_it(client):
    response = client.post(reverse("ui:endpoint_create"), form_data(api_key=SECRET), follow=True)
    endpoint = Endpoint.objects.get(name="local")
    assert endpoint.get_api_key() == SECRET and SECRET not in endpoint.api_key_encrypted
    assert SECRET.encode() not in response.content
    assert b'id="key-state">set<' in response.content
    assert b'type="password" name="api_key"' in response.content


def test_the_key_is_not_rendered_back_after_a_form_error(client):
    response = client.post(reverse("ui:endpoint_create"), form_data(api_key=SECRET, base_url="not a url"))
    assert response.status_code == 200
    assert b"Enter a valid URL" in response.content
    assert SECRET.encode() not in response.content


def test_a_blank_key_keeps_the_stored_one(client):
    endpoint = make_endpoint(api_key=SECRET)
    form = form_data(name="renamed", base_url=endpoint.base_url)
    client.post(reverse("ui:endpoint_edit", args=[endpoint.pk]), form)
    endpoint.refresh_from_db()
    assert endpoint.name == "renamed" and endpoint.get_api_key() == SECRET


def test_clear_key_removes_it(client):
    endpoint = make_endpoint(api_key=SECRET)
    response = client.post(
        reverse("ui:endpoint_edit", args=[endpoint.pk]), form_data(clear_api_key="on"), follow=True
    )
    endpoint.refresh_from_db()
    assert not endpoint.has_api_key
    assert b'id="key-state">not set<' in response.content


def test_the_list_says_set_or_not_set(client):
    make_endpoint("with-key", api_key=SECRET)
    make_endpoint("without-key")
    content = client.get(reverse("ui:endpoint_list")).content.decode()
    assert content.count(">set<") == 1 and content.count(">not set<") == 1
    assert SECRET not in content


def test_extra_headers_must_be_an_object_of_strings(client):
    response = client.post(reverse("ui:endpoint_create"), form_data(extra_headers='{"X-Org": 1}'))
    assert b"JSON object of strings" in response.content
    assert not Endpoint.objects.exists()


def test_the_apis_rules_apply_to_the_form(client):
    response = client.post(reverse("ui:endpoint_create"), form_data(base_url="ftp://example.com/v1"))
    assert b"Use an http:// or https:// URL" in response.content
    response = client.post(reverse("ui:endpoint_create"), form_data(extra_headers='{"Bad Name": "x"}'))
    assert b"is not a valid HTTP header name" in response.content
    assert not Endpoint.objects.exists()


def test_test_connection_lists_the_models_found(client, llm_stub):
    endpoint = make_endpoint(base_url=llm_stub.base_url)
    response = client.post(reverse("ui:endpoint_test", args=[endpoint.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("ui:endpoint_edit", args=[endpoint.pk])
    assert b"Connected to &#x27;local&#x27;" in response.content
    assert b"stub-small, stub-large" in response.content


def test_test_connection_shows_the_error(client):
    endpoint = make_endpoint(base_url="http://127.0.0.1:9/v1", timeout_s=2)
    response = client.post(reverse("ui:endpoint_test", args=[endpoint.pk]), {"next": "list"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("ui:endpoint_list")
    assert b"Could not connect to &#x27;local&#x27;" in response.content


def test_prices_are_entered_per_endpoint_and_per_model_one_line_each(client):
    data = form_data(price_in="2.5", price_out="10", model_prices="gpt-4o-mini 0.15 0.6\n\nbig 5 15\n")
    client.post(reverse("ui:endpoint_create"), data)
    endpoint = Endpoint.objects.get(name="local")
    assert (endpoint.price_in, endpoint.price_out) == (2.5, 10.0)
    assert endpoint.model_prices == {"gpt-4o-mini": [0.15, 0.6], "big": [5.0, 15.0]}
    page = client.get(reverse("ui:endpoint_edit", args=[endpoint.pk])).content.decode()
    assert "big 5 15\ngpt-4o-mini 0.15 0.6</textarea>" in page and "In USD; blank: not priced" in page


@pytest.mark.parametrize("line", ["gpt-4o-mini 0.15", "gpt-4o-mini cheap 0.6", "gpt-4o-mini 0.15 -1"])
def test_a_price_line_that_does_not_read_names_its_line(client, line):
    response = client.post(reverse("ui:endpoint_create"), form_data(model_prices=f"ok 1 2\n{line}"))
    assert "Line 2: write the model, then its input and output prices" in response.content.decode()
    assert not Endpoint.objects.filter(name="local").exists()


def test_test_connection_with_a_key_that_no_longer_decrypts_says_so(client, alice, llm_stub, settings):
    endpoint = make_endpoint("keyed", base_url=llm_stub.base_url, api_key=SECRET)
    settings.SECRET_KEY = "a-rotated-secret-key-that-decrypts-nothing-stored"
    client.force_login(alice)  # the old session was signed with the old key
    response = client.post(reverse("ui:endpoint_test", args=[endpoint.pk]), {"next": "list"}, follow=True)
    page = response.content.decode().replace("&#x27;", "'")
    assert "The key of endpoint 'keyed' cannot be decrypted with this SECRET_KEY; enter it again" in page
    assert llm_stub.calls == 0 and not llm_stub.requests


def test_extra_parameters_are_entered_as_names_and_shown_back(client):
    client.post(reverse("ui:endpoint_create"), form_data(extra_params="top_k, min_p\nrepeat_penalty top_k"))
    endpoint = Endpoint.objects.get(name="local")
    assert endpoint.extra_params == ["top_k", "min_p", "repeat_penalty"]
    page = client.get(reverse("ui:endpoint_edit", args=[endpoint.pk])).content.decode()
    assert 'value="top_k, min_p, repeat_penalty"' in page


def test_an_openai_parameter_is_not_an_extra(client):
    response = client.post(reverse("ui:endpoint_create"), form_data(extra_params="top_k, temperature"))
    assert "&#x27;temperature&#x27; is an OpenAI parameter" in response.content.decode()
    assert not Endpoint.objects.exists()


def test_moving_to_another_host_with_a_new_key_still_warns_about_the_cleared_headers(client):
    endpoint = make_endpoint(api_key=SECRET)
    endpoint.set_extra_headers({"X-Team": "zebra"})
    endpoint.save()
    data = form_data(base_url="https://elsewhere.example/v1", api_key="sk-new-key-for-elsewhere")
    response = client.post(reverse("ui:endpoint_edit", args=[endpoint.pk]), data, follow=True)
    page = response.content.decode()
    assert "The base URL moved to another host" in page and "Enter again what the new host needs" in page
    endpoint.refresh_from_db()
    assert endpoint.get_api_key() == "sk-new-key-for-elsewhere" and endpoint.get_extra_headers() == {}


def test_only_editors_and_admins_see_the_test_button(client, bob):
    from projects.models import Role
    from tests.factories import add_member, make_user, team_project

    make_endpoint()
    assert "Test connection" in client.get(reverse("ui:endpoint_list")).content.decode()  # alice, admin
    client.force_login(bob)  # an editor
    assert "Test connection" in client.get(reverse("ui:endpoint_list")).content.decode()
    viewer = make_user("victor")
    add_member(team_project(), viewer, Role.VIEWER)
    client.force_login(viewer)
    page = client.get(reverse("ui:endpoint_list")).content.decode()
    assert "Test connection" not in page and "local" in page
