"""The OpenAI-compatible adapter against a real loopback server (tests/llm_stub.py)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest

from engine.adapters import OpenAICompatAdapter, create_adapter, normalise_base_url
from engine.adapters.base import estimate_tokens
from engine.adapters.openai_compat import _retry_after, _StreamState
from engine.types import AdapterError, EndpointConfig
from tests import llm_stub
from tests.llm_stub import LLMStub, embed_text

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "say hello to alice"},
]


# The HTTP transport of the endpoints made here; every test runs on each (LLM_HTTP_TRANSPORT).
CURRENT = {"http_transport": "lean"}


@pytest.fixture(autouse=True, params=["lean", "httpx"])
def http_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(CURRENT, "http_transport", request.param)
    return request.param


def make_endpoint(base_url: str, **kwargs: Any) -> EndpointConfig:
    return EndpointConfig(name="alice-vllm", base_url=base_url, **{**CURRENT, **kwargs})


def make_adapter(base_url: str, **kwargs: Any) -> OpenAICompatAdapter:
    return OpenAICompatAdapter(make_endpoint(base_url, **kwargs), retry_base_delay_s=0.001)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# -- answers -------------------------------------------------------------------
@pytest.mark.asyncio
async def test_streaming_and_plain_calls_give_the_same_answer(stub: LLMStub) -> None:
    async with make_adapter(stub.base_url) as adapter:
        plain = await adapter.complete(MESSAGES, "stub-small", {})
        streamed = await adapter.complete(MESSAGES, "stub-small", {"stream": True})
    assert plain.text == streamed.text == "echo: say hello to alice"
    assert (plain.tokens_in, plain.tokens_out) == (streamed.tokens_in, streamed.tokens_out)
    assert plain.finish_reason == streamed.finish_reason == "stop"
    assert plain.model == streamed.model == "stub-small"
    assert not plain.usage_estimated and not streamed.usage_estimated
    assert plain.latency_ms > 0 and streamed.latency_ms > 0
    assert plain.raw["choices"][0]["message"]["content"] == plain.text
    assert streamed.raw["stream"] and streamed.raw["usage"]["completion_tokens"] == 5


@pytest.mark.asyncio
async def test_usage_is_read_from_the_server(stub: LLMStub) -> None:
    async with make_adapter(stub.base_url) as adapter:
        response = await adapter.complete(MESSAGES, "stub-small", {})
    # The stub counts words: 3 + 4 in the prompt, "echo: say hello to alice" out.
    assert (response.tokens_in, response.tokens_out) == (7, 5)


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_usage_is_estimated_when_the_server_sends_none(stub: LLMStub, stream: bool) -> None:
    stub.send_usage = False
    async with make_adapter(stub.base_url) as adapter:
        response = await adapter.complete(MESSAGES, "stub-small", {"stream": stream})
    assert response.usage_estimated
    assert response.tokens_out == estimate_tokens("echo: say hello to alice") == 6
    assert response.tokens_in == estimate_tokens("You are terse.") + estimate_tokens("say hello to alice")


def test_estimated_tokens_are_never_zero_for_text() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcdefgh") == 2


# -- what is sent ----------------------------------------------------------------
@pytest.mark.asyncio
async def test_every_sampling_parameter_is_passed_through(stub: LLMStub) -> None:
    params = {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "top_k": 40,  # not an OpenAI parameter, but vLLM and llama.cpp take it
    }
    async with make_adapter(stub.base_url) as adapter:
        await adapter.complete(MESSAGES, "stub-large", params)
    sent = stub.requests[0]
    assert {k: sent[k] for k in params} == params
    assert sent["model"] == "stub-large"
    assert sent["messages"] == MESSAGES


@pytest.mark.asyncio
async def test_the_stream_flag_selects_streaming_and_is_not_a_sampling_param(
    stub: LLMStub,
) -> None:
    params = {"temperature": 0.5, "stream": False}
    async with make_adapter(stub.base_url) as adapter:
        await adapter.complete(MESSAGES, "stub-small", params)
        await adapter.complete(MESSAGES, "stub-small", {"temperature": 0.5, "stream": True})
    plain, streamed = stub.requests
    assert "stream" not in plain and "stream_options" not in plain
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}
    assert params == {"temperature": 0.5, "stream": False}  # the caller's dict is untouched


@pytest.mark.asyncio
@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "", "/"])
async def test_base_urls_work_with_or_without_v1(stub: LLMStub, suffix: str) -> None:
    base_url = f"http://127.0.0.1:{stub.port}{suffix}"
    async with make_adapter(base_url) as adapter:
        assert adapter.base_url == stub.base_url
        response = await adapter.complete(MESSAGES, "stub-small", {})
    assert response.text == "echo: say hello to alice"


def test_base_urls_are_normalised_to_one_spelling() -> None:
    assert normalise_base_url("http://gpu-box:8000") == "http://gpu-box:8000/v1"
    assert normalise_base_url(" http://gpu-box:8000/v1/ ") == "http://gpu-box:8000/v1"
    assert normalise_base_url("localhost:11434") == "http://localhost:11434/v1"
    assert normalise_base_url("https://api.openai.com/v1/chat/completions") == ("https://api.openai.com/v1")
    assert normalise_base_url("http://webui:3000/api/") == "http://webui:3000/api"


@pytest.mark.asyncio
async def test_the_api_key_and_extra_headers_are_sent(stub: LLMStub) -> None:
    extra = {"X-Team": "bob"}
    async with make_adapter(stub.base_url, api_key="sk-alice", extra_headers=extra) as adapter:
        await adapter.complete(MESSAGES, "stub-small", {})
    async with make_adapter(stub.base_url) as anonymous:
        await anonymous.complete(MESSAGES, "stub-small", {})
    with_key, without_key = stub.request_headers
    assert with_key["authorization"] == "Bearer sk-alice"
    assert with_key["x-team"] == "bob"
    assert "authorization" not in without_key


# -- retries ----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_429_waits_as_long_as_retry_after_says(stub: LLMStub) -> None:
    stub.fail_next("status", status=429, body="slow down", headers={"Retry-After": "1"})
    async with make_adapter(stub.base_url) as adapter:
        response = await adapter.complete(MESSAGES, "stub-small", {})
    assert response.text == "echo: say hello to alice"
    assert stub.calls == 2
    assert stub.request_times[1] - stub.request_times[0] >= 1.0


@pytest.mark.asyncio
async def test_a_500_is_retried_and_then_succeeds(stub: LLMStub) -> None:
    stub.fail_next("status", status=500)
    async with make_adapter(stub.base_url) as adapter:
        response = await adapter.complete(MESSAGES, "stub-small", {})
    assert response.text == "echo: say hello to alice"
    assert stub.calls == 2


@pytest.mark.asyncio
async def test_three_500s_give_an_error_naming_status_endpoint_and_body(stub: LLMStub) -> None:
    stub.fail_next("status", count=3, status=500, body='{"error": "the GPU caught fire"}')
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError) as caught:
            await adapter.complete(MESSAGES, "stub-small", {})
    message = str(caught.value)
    assert "HTTP 500" in message
    assert "alice-vllm" in message and stub.base_url in message
    assert "the GPU caught fire" in message
    assert "3 attempts" in message
    assert caught.value.status == 500 and not caught.value.permanent
    assert stub.calls == 3


@pytest.mark.asyncio
async def test_a_long_error_body_is_cut_to_an_excerpt(stub: LLMStub) -> None:
    stub.fail_next("status", status=400, body="x" * 5000)
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError) as caught:
            await adapter.complete(MESSAGES, "stub-small", {})
    assert "x" * 200 + "…" in str(caught.value)
    assert "x" * 201 not in str(caught.value)


@pytest.mark.asyncio
async def test_a_400_is_permanent_and_not_retried(stub: LLMStub) -> None:
    stub.fail_next("status", status=400, body='{"error": {"message": "unknown model"}}')
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError) as caught:
            await adapter.complete(MESSAGES, "nope", {})
    assert caught.value.permanent and caught.value.status == 400
    assert "1 attempt" in str(caught.value) and "unknown model" in str(caught.value)
    assert stub.calls == 1


@pytest.mark.asyncio
async def test_a_401_tells_you_to_check_the_api_key(stub: LLMStub) -> None:
    stub.fail_next("status", status=401, body="bad key")
    async with make_adapter(stub.base_url, api_key="wrong") as adapter:
        with pytest.raises(AdapterError, match="API key") as caught:
            await adapter.complete(MESSAGES, "stub-small", {})
    assert caught.value.permanent and stub.calls == 1


@pytest.mark.asyncio
async def test_a_timeout_is_retried(stub: LLMStub) -> None:
    stub.fail_next("hang", seconds=0.4)
    async with make_adapter(stub.base_url, timeout_s=0.1) as adapter:
        response = await adapter.complete(MESSAGES, "stub-small", {})
    assert response.text == "echo: say hello to alice"
    assert stub.calls == 2


@pytest.mark.asyncio
async def test_timeouts_on_every_attempt_give_an_error(stub: LLMStub) -> None:
    stub.fail_next("hang", count=3, seconds=0.3)
    async with make_adapter(stub.base_url, timeout_s=0.05) as adapter:
        with pytest.raises(AdapterError, match=r"no answer within 0\.05 s.*3 attempts"):
            await adapter.complete(MESSAGES, "stub-small", {"stream": True})
    assert stub.calls == 3


@pytest.mark.asyncio
async def test_a_dropped_connection_is_retried(stub: LLMStub) -> None:
    stub.fail_next("disconnect")
    async with make_adapter(stub.base_url) as adapter:
        response = await adapter.complete(MESSAGES, "stub-small", {})
    assert response.text == "echo: say hello to alice"
    assert stub.calls == 2


@pytest.mark.asyncio
async def test_a_refused_connection_fails_after_three_attempts() -> None:
    async with make_adapter(closed_port_url()) as adapter:
        with pytest.raises(AdapterError) as caught:
            await adapter.complete(MESSAGES, "stub-small", {})
    assert "connection failed" in str(caught.value)
    assert "3 attempts" in str(caught.value)
    assert "alice-vllm" in str(caught.value)
    assert not caught.value.permanent


@pytest.mark.asyncio
async def test_a_base_url_with_a_foreign_scheme_is_a_permanent_error() -> None:
    async with make_adapter("ftp://models.example/v1") as adapter:
        with pytest.raises(AdapterError, match="bad URL.*1 attempt") as caught:
            await adapter.complete(MESSAGES, "stub-small", {})
    assert caught.value.permanent


# -- broken answers ----------------------------------------------------------------
@pytest.mark.asyncio
async def test_malformed_json_is_an_error_not_an_empty_answer(stub: LLMStub) -> None:
    stub.fail_next("malformed")
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="malformed response.*not JSON"):
            await adapter.complete(MESSAGES, "stub-small", {})
    assert stub.calls == 1


@pytest.mark.asyncio
async def test_a_body_without_choices_is_an_error(stub: LLMStub) -> None:
    stub.fail_next("status", status=200, body='{"id": "x", "choices": []}')
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="no choices"):
            await adapter.complete(MESSAGES, "stub-small", {})


@pytest.mark.asyncio
async def test_a_body_that_is_not_an_object_is_an_error(stub: LLMStub) -> None:
    stub.fail_next("status", status=200, body="[1, 2]")
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="not a JSON object"):
            await adapter.complete(MESSAGES, "stub-small", {})


@pytest.mark.asyncio
async def test_a_200_carrying_an_error_object_is_an_error(stub: LLMStub) -> None:
    stub.fail_next("status", status=200, body='{"error": {"message": "model not loaded"}}')
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="model not loaded"):
            await adapter.complete(MESSAGES, "stub-small", {})


@pytest.mark.asyncio
async def test_a_truncated_stream_is_retried_then_an_error(stub: LLMStub) -> None:
    stub.fail_next("truncated", count=3)
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="3 attempts"):
            await adapter.complete(MESSAGES, "stub-small", {"stream": True})
    assert stub.calls == 3


@pytest.mark.asyncio
async def test_a_truncated_stream_recovers_on_retry(stub: LLMStub) -> None:
    stub.fail_next("truncated")
    async with make_adapter(stub.base_url) as adapter:
        response = await adapter.complete(MESSAGES, "stub-small", {"stream": True})
    assert response.text == "echo: say hello to alice"


@pytest.mark.asyncio
async def test_a_stream_that_ends_without_finishing_is_an_error(stub: LLMStub) -> None:
    unfinished = 'data: {"choices": [{"index": 0, "delta": {"content": "hal"}}]}\n\n'
    stub.fail_next("status", count=3, status=200, body=unfinished)
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="stream ended before it finished"):
            await adapter.complete(MESSAGES, "stub-small", {"stream": True})


@pytest.mark.asyncio
async def test_an_sse_error_event_is_an_error(stub: LLMStub) -> None:
    event = 'data: {"error": {"message": "context length exceeded"}}\n\n'
    stub.fail_next("status", status=200, body=event)
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="context length exceeded"):
            await adapter.complete(MESSAGES, "stub-small", {"stream": True})
    assert stub.calls == 1


@pytest.mark.asyncio
async def test_an_error_status_on_a_stream_is_reported(stub: LLMStub) -> None:
    stub.fail_next("status", status=404, body="no such model")
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="HTTP 404: no such model") as caught:
            await adapter.complete(MESSAGES, "stub-small", {"stream": True})
    assert caught.value.permanent


@pytest.mark.asyncio
async def test_a_stream_chunk_that_is_not_json_is_an_error(stub: LLMStub) -> None:
    stub.fail_next("status", status=200, body="data: {not json\n\n")
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="stream chunk is not JSON"):
            await adapter.complete(MESSAGES, "stub-small", {"stream": True})


@pytest.mark.asyncio
async def test_a_plain_json_answer_to_a_stream_request_is_an_error(stub: LLMStub) -> None:
    stub.fail_next("status", status=200, body='{"detail": "streaming is not supported"}')
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="not answer with server-sent events.*not supported"):
            await adapter.complete(MESSAGES, "stub-small", {"stream": True})
    assert stub.calls == 1


@pytest.mark.asyncio
async def test_calls_reuse_one_kept_alive_connection(stub: LLMStub) -> None:
    async with make_adapter(stub.base_url) as adapter:
        for stream in (True, True, False, False):
            await adapter.complete(MESSAGES, "stub-small", {"stream": stream})
    assert len(set(stub.request_ports)) == 1


def test_the_stream_parser_skips_comments_and_reads_named_error_events() -> None:
    state = _StreamState()
    assert not state.feed(": keep-alive")
    assert not state.feed("id: 1")
    assert not state.feed('data:{"choices": [{"delta": {"content": "hi"}}]}')
    assert not state.feed("")
    assert not state.feed("event: error")
    assert state.feed('data: {"message": "overloaded"}')
    assert state.error == "overloaded" and state.pieces == ["hi"] and state.stray is None
    assert _StreamState().feed("data: [1, 2]")  # JSON, but not a chunk
    bare = _StreamState()
    assert bare.feed('data: {"error": "boom"}') and bare.error == "boom"


def test_the_stream_parser_ignores_what_follows_done() -> None:
    state = _StreamState()
    assert not state.feed('data: {"choices": [{"delta": {"content": "hi"}}]}')
    assert not state.feed("data: [DONE]") and state.done
    assert not state.feed('data: {"choices": [{"delta": {"content": "late"}}]}')
    assert state.pieces == ["hi"]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def response(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value} if value else {})

    assert _retry_after(response("3")) == 3.0
    assert _retry_after(response("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0
    assert _retry_after(response("soon")) is None
    assert _retry_after(response("")) is None


def test_backoff_grows_and_retry_after_is_capped() -> None:
    adapter = OpenAICompatAdapter(make_endpoint("http://x"), retry_base_delay_s=1.0)
    assert 0.5 <= adapter._backoff(1, None) <= 1.5
    assert 2.0 <= adapter._backoff(3, None) <= 6.0
    assert adapter._backoff(1, 3600.0) == 60.0


# -- models, connection test, embeddings --------------------------------------------
@pytest.mark.asyncio
async def test_list_models(stub: LLMStub) -> None:
    async with make_adapter(stub.base_url) as adapter:
        assert await adapter.list_models() == ["stub-small", "stub-large"]


@pytest.mark.asyncio
async def test_list_models_on_a_wrong_path_says_to_check_the_url(stub: LLMStub) -> None:
    async with make_adapter(f"http://127.0.0.1:{stub.port}/v1/chat") as adapter:
        with pytest.raises(AdapterError, match="HTTP 404.*Check the base URL"):
            await adapter.list_models()


@pytest.mark.asyncio
async def test_list_models_rejects_a_body_without_models(
    stub: LLMStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llm_stub._Handler, "do_GET", lambda handler: handler._json(200, [1]))
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="no 'data' list of models"):
            await adapter.list_models()


@pytest.mark.asyncio
async def test_test_connection_reports_models_and_latency(stub: LLMStub) -> None:
    async with make_adapter(stub.base_url) as adapter:
        report = await adapter.test_connection()
    assert report["ok"] and report["error"] is None
    assert report["models"] == ["stub-small", "stub-large"]
    assert report["latency_ms"] > 0


@pytest.mark.asyncio
async def test_test_connection_to_a_closed_port_reports_instead_of_raising() -> None:
    async with make_adapter(closed_port_url()) as adapter:
        report = await adapter.test_connection()
    assert not report["ok"] and report["models"] == []
    assert "connection failed" in report["error"] and "1 attempt" in report["error"]


@pytest.mark.asyncio
async def test_embeddings_come_back_in_input_order(stub: LLMStub, monkeypatch: pytest.MonkeyPatch) -> None:
    def embeddings_in_reverse(handler: Any, body: dict[str, Any]) -> None:
        rows = [{"index": i, "embedding": embed_text(t)} for i, t in enumerate(body["input"])]
        handler._json(200, {"object": "list", "data": rows[::-1]})

    monkeypatch.setattr(llm_stub._Handler, "_embeddings", embeddings_in_reverse)
    texts = ["red apple", "blue sky", "green grass"]
    async with make_adapter(stub.base_url) as adapter:
        vectors = await adapter.embed(texts, "stub-embed")
    assert vectors == [embed_text(t) for t in texts]


@pytest.mark.asyncio
async def test_embeddings_are_sent_in_batches(stub: LLMStub) -> None:
    texts = [f"text {i}" for i in range(5)]
    async with make_adapter(stub.base_url, embedding_model="stub-embed") as adapter:
        adapter.embed_batch_size = 2
        vectors = await adapter.embed(texts, "")
    assert vectors == [embed_text(t) for t in texts]
    assert [len(r["input"]) for r in stub.embedding_requests] == [2, 2, 1]
    assert stub.embedding_requests[0]["model"] == "stub-embed"


@pytest.mark.asyncio
async def test_embeddings_need_a_model(stub: LLMStub) -> None:
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="embedding model") as caught:
            await adapter.embed(["hi"], "")
    assert caught.value.permanent


@pytest.mark.asyncio
async def test_embeddings_with_a_wrong_count_are_an_error(
    stub: LLMStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def one_embedding_short(handler: Any, body: dict[str, Any]) -> None:
        handler._json(200, {"data": [{"index": 0, "embedding": [1.0]}]})

    monkeypatch.setattr(llm_stub._Handler, "_embeddings", one_embedding_short)
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="1 embeddings for 2 inputs"):
            await adapter.embed(["a", "b"], "stub-embed")


@pytest.mark.asyncio
async def test_embeddings_without_data_are_an_error(stub: LLMStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_stub._Handler, "_embeddings", lambda handler, body: handler._json(200, {"x": 1}))
    async with make_adapter(stub.base_url) as adapter:
        with pytest.raises(AdapterError, match="malformed response"):
            await adapter.embed(["a"], "stub-embed")


def test_create_adapter_builds_the_openai_adapter_by_default() -> None:
    adapter = create_adapter(make_endpoint("http://gpu-box:8000"))
    assert isinstance(adapter, OpenAICompatAdapter)
    assert adapter.can_stream and adapter.can_embed and adapter.name == "openai"


@pytest.mark.asyncio
async def test_the_connection_pool_is_sized_by_the_caller() -> None:
    # A stub of its own: a shared one may still be sleeping on an earlier test's hang.
    with LLMStub(latency_ms=20) as stub:
        async with create_adapter(make_endpoint(stub.base_url), max_connections=2) as adapter:
            assert adapter.max_connections == 2
            # Six at once through two connections: the stub never sees more than two.
            await asyncio.gather(*(adapter.complete(MESSAGES, "stub-small", {}) for _ in range(6)))
        assert stub.calls == 6
        assert stub.max_in_flight <= 2 and len(set(stub.request_ports)) <= 2
