"""Rate limits absorbed by the gateway, against a loopback server that answers 429
(with Retry-After) whenever more than K calls are in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.gateway import Gateway
from engine.types import AdapterError, EndpointConfig
from tests.llm_stub import LLMStub

# Fast backoff and patience: a test waits for real pauses.
FAST = {"backoff_base_s": 0.01, "patience_s": 1.0}


def endpoint(stub: LLMStub, **kwargs: Any) -> EndpointConfig:
    return EndpointConfig(name="alice-vllm", base_url=stub.base_url, default_model="stub-small", **kwargs)


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


@pytest.mark.asyncio
async def test_forty_calls_at_32_against_a_server_that_takes_4_all_succeed(stub: LLMStub) -> None:
    stub.capacity, stub.retry_after, stub.latency_ms = 4, "0.05", 20
    async with Gateway(max_concurrent=32, limit_options=FAST) as gateway:
        calls = [gateway.complete(endpoint(stub), ask(f"q{i}"), "stub-small", {}) for i in range(40)]
        results = await asyncio.gather(*calls)
        limit = gateway.endpoint_limit(endpoint(stub))
    assert [r.response.text for r in results] == [f"echo: q{i}" for i in range(40)]
    assert stub.rate_limited > 0 and stub.max_serving == 4
    assert len(stub.answered) == 40 and gateway.calls_made == 40
    # The first burst of refusals cut once, not once per 429.
    assert 1 <= limit.cuts < stub.rate_limited
    assert limit.in_flight == 0


@pytest.mark.asyncio
async def test_no_call_reaches_the_server_before_retry_after_has_passed(stub: LLMStub) -> None:
    stub.fail_next("status", status=429, body="slow down", headers={"Retry-After": "0.4"})
    async with Gateway(max_concurrent=8, limit_options=FAST) as gateway:
        first = asyncio.ensure_future(gateway.complete(endpoint(stub), ask("a"), "stub-small", {}))
        limit = gateway.endpoint_limit(endpoint(stub))
        while not limit.cuts:  # the 429 is in
            await asyncio.sleep(0.005)
        # A call made during the pause waits it out, as the refused one does.
        second = await gateway.complete(endpoint(stub), ask("b"), "stub-small", {})
        await first
    assert second.response.text == "echo: b"
    refused_at, *later = stub.request_times
    assert stub.calls == 3 and min(later) - refused_at >= 0.4


@pytest.mark.asyncio
async def test_a_server_that_always_answers_429_fails_the_call_with_what_to_do(stub: LLMStub) -> None:
    stub.capacity, stub.retry_after = 0, "0.1"
    async with Gateway(max_concurrent=8, limit_options=FAST) as gateway:
        with pytest.raises(AdapterError) as caught:
            await asyncio.wait_for(gateway.complete(endpoint(stub), ask("a"), "stub-small", {}), 30)
    message = str(caught.value)
    assert "alice-vllm" in message and "HTTP 429" in message
    assert "every call was refused for" in message and "rate limits" in message
    assert caught.value.status == 429 and not caught.value.permanent
    # Retried for the whole patience (1 s at 0.1 s pauses), not three times and out.
    assert stub.calls >= 5


@pytest.mark.asyncio
async def test_a_503_slows_down_and_is_retried_like_a_429(stub: LLMStub) -> None:
    stub.fail_next("status", count=5, status=503, body="overloaded")
    async with Gateway(max_concurrent=8, limit_options=FAST) as gateway:
        result = await gateway.complete(endpoint(stub), ask("a"), "stub-small", {})
        limit = gateway.endpoint_limit(endpoint(stub))
    assert result.response.text == "echo: a"
    # 8 -> 4 -> 2 -> 1 -> 1 -> 1, then the success at 1 is a whole window: back to 2.
    assert stub.calls == 6 and limit.cuts == 5 and limit.limit == 2


@pytest.mark.asyncio
async def test_out_of_quota_is_not_a_rate_limit_and_fails_at_once(stub: LLMStub) -> None:
    body = '{"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}'
    stub.fail_next("status", status=429, body=body)
    async with Gateway(max_concurrent=8, limit_options=FAST) as gateway:
        with pytest.raises(AdapterError) as caught:
            await gateway.complete(endpoint(stub), ask("a"), "stub-small", {})
    assert caught.value.permanent and "1 attempt" in str(caught.value)
    assert "quota" in str(caught.value) and stub.calls == 1


@pytest.mark.asyncio
async def test_an_endpoint_limit_below_the_global_one_is_the_ceiling(stub: LLMStub) -> None:
    stub.latency_ms = 30
    async with Gateway(max_concurrent=8) as gateway:
        await asyncio.gather(
            *(
                gateway.complete(endpoint(stub, max_concurrency=3), ask(f"q{i}"), "stub-small", {})
                for i in range(9)
            )
        )
        assert gateway.endpoint_limit(endpoint(stub)).ceiling == 3
    assert stub.max_in_flight == 3
