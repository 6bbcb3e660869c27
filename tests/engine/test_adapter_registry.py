"""The adapter registry and what the base class does for adapters that lack a feature."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.adapters import ADAPTERS, BaseAdapter, create_adapter, register_adapter
from engine.types import AdapterError, EndpointConfig


@pytest.fixture
def registry() -> Iterator[dict[str, type[BaseAdapter]]]:
    saved = dict(ADAPTERS)
    yield ADAPTERS
    ADAPTERS.clear()
    ADAPTERS.update(saved)


def make_endpoint(adapter: str) -> EndpointConfig:
    return EndpointConfig(name="bob-box", base_url="http://bob-box:8000", adapter=adapter)


def test_the_openai_adapter_is_registered_on_import() -> None:
    assert "openai" in ADAPTERS


def test_an_unknown_adapter_name_lists_the_known_ones() -> None:
    with pytest.raises(AdapterError) as caught:
        create_adapter(make_endpoint("anthropic-native"))
    message = str(caught.value)
    assert "'anthropic-native'" in message and "bob-box" in message
    assert "openai" in message
    assert caught.value.permanent


def test_a_registered_adapter_is_created_by_name(registry: dict) -> None:
    @register_adapter("charlie-echo")
    class EchoAdapter(BaseAdapter):
        pass

    adapter = create_adapter(make_endpoint("charlie-echo"))
    assert isinstance(adapter, EchoAdapter)
    assert EchoAdapter.name == "charlie-echo"
    assert adapter.endpoint.name == "bob-box"


def test_two_adapters_cannot_share_a_name(registry: dict) -> None:
    with pytest.raises(ValueError, match="'openai' is taken"):

        @register_adapter("openai")
        class Impostor(BaseAdapter):
            pass


@pytest.mark.asyncio
async def test_an_adapter_without_completions_or_embeddings_says_so(registry: dict) -> None:
    @register_adapter("charlie-bare")
    class BareAdapter(BaseAdapter):
        pass

    async with create_adapter(make_endpoint("charlie-bare")) as adapter:
        with pytest.raises(AdapterError, match="cannot run chat completions") as caught:
            await adapter.complete([], "m", {})
        assert caught.value.permanent
        with pytest.raises(AdapterError, match="cannot compute embeddings"):
            await adapter.embed(["hi"], "m")
        report = await adapter.test_connection()
    assert report["ok"] and report["models"] == [] and report["error"] is None


@pytest.mark.asyncio
async def test_test_connection_reports_any_failure(registry: dict) -> None:
    @register_adapter("charlie-broken")
    class BrokenAdapter(BaseAdapter):
        async def list_models(self) -> list[str]:
            raise RuntimeError

    report = await create_adapter(make_endpoint("charlie-broken")).test_connection()
    assert not report["ok"] and report["error"] == "RuntimeError"
