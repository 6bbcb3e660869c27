"""An endpoint at a name that does not resolve, reached through the proxy in HTTP_PROXY:
the connection test (and so every call) goes through it, with either HTTP transport."""

import pytest

from tests.factories import make_endpoint
from tests.http_proxy import LoopbackProxy

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("transport", ["lean", "httpx"])
def test_an_endpoint_only_the_proxy_can_reach_answers_the_connection_test(
    llm_stub, settings, monkeypatch, transport
):
    settings.LLM_HTTP_TRANSPORT = transport
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with LoopbackProxy(hosts={"llm.invalid": "127.0.0.1"}) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        endpoint = make_endpoint(base_url=f"http://llm.invalid:{llm_stub.port}/v1")
        assert endpoint.engine_config().http_transport == transport
        report = endpoint.test_connection()
    assert report["ok"], report["error"]
    assert report["models"] == ["stub-small", "stub-large"]
    assert proxy.seen == [f"GET http://llm.invalid:{llm_stub.port}/v1/models"]
