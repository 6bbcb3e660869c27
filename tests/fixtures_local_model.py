"""Fixtures for tests that use the bundled local models.

Registered from the root conftest with `pytest_plugins = ["tests.fixtures_local_model"]`.
Tests skip when the model packages are missing; set LOCAL_MODEL_REQUIRED=1 (as CI does,
since it installs them) to make that a failure instead of a quiet skip.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from engine.local_model import (
    INSTALLER,
    LocalModelMissing,
    LocalModelServer,
    find_minilm_files,
    find_smollm_gguf,
)

SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
EMBEDDER_MODULES = ("onnxruntime", "tokenizers", "numpy")


def _missing_modules(names: tuple[str, ...]) -> str | None:
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        return f"not installed: {', '.join(missing)}; run `{INSTALLER}`"
    return None


def local_llm_missing() -> str | None:
    """Why the bundled SmolLM2 server cannot run here, or None when it can."""
    try:
        find_smollm_gguf()
    except LocalModelMissing as exc:
        return str(exc)
    return _missing_modules(SERVER_MODULES)


def minilm_missing() -> str | None:
    """Why the bundled MiniLM embedder cannot run here, or None when it can."""
    try:
        find_minilm_files()
    except LocalModelMissing as exc:
        return str(exc)
    return _missing_modules(EMBEDDER_MODULES)


def skip_unless_installed(reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("LOCAL_MODEL_REQUIRED") == "1":
        pytest.fail(f"LOCAL_MODEL_REQUIRED=1 but the bundled model is {reason}")
    pytest.skip(f"bundled model unavailable: {reason}")


@pytest.fixture(scope="session")
def local_llm() -> Iterator[LocalModelServer]:
    """The llama.cpp server with SmolLM2-135M (alias `smollm2-135m`), shared by the session.

    It answers one request at a time: give its endpoint max_concurrency=1.
    """
    skip_unless_installed(local_llm_missing())
    with LocalModelServer() as server:
        yield server
