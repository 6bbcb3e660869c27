"""The adapter honours HTTP_PROXY, HTTPS_PROXY and NO_PROXY as any httpx client does,
with either HTTP transport, against a real loopback proxy (tests/http_proxy.py)."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.adapters import OpenAICompatAdapter
from engine.adapters.openai_compat import _ssl_context
from engine.types import AdapterError, EndpointConfig
from tests.http_proxy import LoopbackProxy
from tests.llm_stub import LLMStub

MESSAGES = [{"role": "user", "content": "say hello to alice"}]
# A name no resolver knows (RFC 2606): only the proxy can reach it.
UNRESOLVABLE = "llm.invalid"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
TRANSPORTS = ["lean", "httpx"]


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it means; none come from the machine."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def stub() -> Iterator[LLMStub]:
    with LLMStub() as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[LoopbackProxy]:
    with LoopbackProxy(hosts={UNRESOLVABLE: "127.0.0.1"}) as server:
        yield server


def adapter(base_url: str, transport: str) -> OpenAICompatAdapter:
    endpoint = EndpointConfig(name="alice-vllm", base_url=base_url, http_transport=transport)
    return OpenAICompatAdapter(endpoint, retry_base_delay_s=0.001)


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unresolvable_host_is_reached_through_http_proxy(
    stub: LLMStub, proxy: LoopbackProxy, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    async with adapter(f"http://{UNRESOLVABLE}:{stub.port}/v1", transport) as llm:
        first = await llm.complete(MESSAGES, "stub-small", {})
        second = await llm.complete(MESSAGES, "stub-small", {"stream": True})
    assert first.text == second.text == "echo: say hello to alice"
    # Absolute-form request lines: how a client asks a proxy for an http:// URL.
    url = f"http://{UNRESOLVABLE}:{stub.port}/v1/chat/completions"
    assert proxy.seen == [f"POST {url}", f"POST {url}"]


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_proxy_sends_a_host_direct(
    stub: LLMStub, proxy: LoopbackProxy, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "gpu-box.internal, localhost")
    async with adapter(f"http://localhost:{stub.port}/v1", transport) as llm:
        assert (await llm.complete(MESSAGES, "stub-small", {})).text == "echo: say hello to alice"
    assert proxy.seen == []
    # Another host is still proxied.
    async with adapter(f"http://{UNRESOLVABLE}:{stub.port}/v1", transport) as llm:
        await llm.complete(MESSAGES, "stub-small", {})
    assert proxy.seen == [f"POST http://{UNRESOLVABLE}:{stub.port}/v1/chat/completions"]


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_https_endpoint_is_tunnelled_through_https_proxy_with_connect(
    proxy: LoopbackProxy, transport: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path, UNRESOLVABLE)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = LLMStub()
    server.tls = tls
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # a dead proxy: must not be used for https
    # The adapter trusts a private CA through SSL_CERT_FILE, as httpx does.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    _ssl_context.cache_clear()
    try:
        with server:
            port = server.port
            async with adapter(f"https://{UNRESOLVABLE}:{port}/v1", transport) as llm:
                response = await llm.complete(MESSAGES, "stub-small", {})
    finally:
        _ssl_context.cache_clear()
    assert response.text == "echo: say hello to alice"
    assert proxy.seen == [f"CONNECT {UNRESOLVABLE}:{port}"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_proxy_httpx_cannot_use_is_a_permanent_error_naming_the_variables(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "ftp://proxy.corp:21")
    with pytest.raises(AdapterError) as caught:
        adapter("https://api.openai.com/v1", transport)
    assert caught.value.permanent
    assert "alice-vllm" in str(caught.value) and "HTTPS_PROXY" in str(caught.value)


def test_an_unknown_transport_is_a_permanent_error_naming_the_setting() -> None:
    with pytest.raises(AdapterError, match="LLM_HTTP_TRANSPORT") as caught:
        adapter("http://127.0.0.1:9/v1", "curl")
    assert caught.value.permanent and "lean, httpx" in str(caught.value)


def self_signed_certificate(folder: Path, host: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
