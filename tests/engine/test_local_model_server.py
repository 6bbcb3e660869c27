"""The bundled SmolLM2 answers like an OpenAI endpoint, through a real llama.cpp server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.local_model import LocalModelMissing, LocalModelServer, _packaged_file
from engine.types import EngineError
from tests.fixtures_local_model import local_llm_missing, skip_unless_installed


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[LocalModelServer]:
    # Reuse the session's server when the conftest registers tests.fixtures_local_model;
    # start one for this module when the file runs on its own.
    try:
        shared = request.getfixturevalue("local_llm")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield shared
        return
    skip_unless_installed(local_llm_missing())
    with LocalModelServer() as own:
        yield own


@pytest.mark.local_model
def test_models_lists_the_alias(server):
    body = httpx.get(f"{server.base_url}/models", timeout=10).json()
    assert "smollm2-135m" in [model["id"] for model in body["data"]]


@pytest.mark.local_model
def test_chat_completion_returns_text_and_usage(server):
    request = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Name one colour."}],
        "max_tokens": 16,
        "temperature": 0,
    }
    body = httpx.post(f"{server.base_url}/chat/completions", json=request, timeout=60).json()
    assert body["choices"][0]["message"]["content"].strip()
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.local_model
def test_leaving_the_context_stops_the_server():
    skip_unless_installed(local_llm_missing())
    with LocalModelServer() as server:
        assert server.running
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/models", timeout=2)


@pytest.mark.local_model
def test_a_bad_model_file_fails_with_the_server_log(tmp_path: Path):
    skip_unless_installed(local_llm_missing())
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf")
    with pytest.raises(EngineError, match="exited during startup") as caught:
        LocalModelServer(model_path=broken).start()
    assert caught.value.permanent


def test_a_missing_package_names_the_installer():
    with pytest.raises(LocalModelMissing, match="scripts/install_local_model.sh"):
        _packaged_file("no_such_model_package", "model.gguf", "no-such-model-package")
