"""The bundled MiniLM embedder gives sentence-transformers' vectors, offline."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from engine.adapters import create_adapter, local_minilm
from engine.adapters.local_minilm import LocalMiniLMEmbedder
from engine.types import AdapterError, EndpointConfig
from tests.fixtures_local_model import minilm_missing, skip_unless_installed

CAT = "The cat sat on the mat"
CAT_PARAPHRASE = "A cat was sitting on a mat"
STOCKS = "Stock prices fell sharply"

pytestmark = pytest.mark.local_model


@pytest.fixture(autouse=True)
def installed() -> None:
    skip_unless_installed(minilm_missing())


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # the vectors are unit length


def make_adapter():
    return create_adapter(EndpointConfig(name="offline", base_url="", adapter="local-minilm"))


def test_paraphrases_score_high():
    cat, paraphrase = LocalMiniLMEmbedder().embed([CAT, CAT_PARAPHRASE])
    assert cosine(cat, paraphrase) == pytest.approx(0.94, abs=0.03)


def test_unrelated_sentences_score_low():
    cat, stocks = LocalMiniLMEmbedder().embed([CAT, STOCKS])
    assert cosine(cat, stocks) == pytest.approx(0.08, abs=0.03)


def test_vectors_are_unit_length_and_384_wide():
    (vector,) = LocalMiniLMEmbedder().embed([CAT])
    assert len(vector) == 384
    assert math.fsum(x * x for x in vector) == pytest.approx(1.0, abs=1e-5)


def test_a_batch_equals_one_by_one(monkeypatch):
    # Small ONNX batches and mixed lengths, so both chunking and padding happen.
    monkeypatch.setattr(local_minilm, "BATCH_SIZE", 3)
    texts = [CAT, STOCKS, "word " * 300, "", CAT_PARAPHRASE * 3, "héllo", "ok"]
    embedder = LocalMiniLMEmbedder()
    batched = embedder.embed(texts)
    for text, vector in zip(texts, batched, strict=True):
        (alone,) = embedder.embed([text])
        assert max(abs(x - y) for x, y in zip(vector, alone, strict=True)) < 1e-5


def test_empty_and_unicode_texts_embed_to_unit_vectors():
    texts = ["", " ", "héllo wörld", "日本語の文章です", "🙂🚀", "\u200b\n\t"]
    for vector in LocalMiniLMEmbedder().embed(texts):
        assert all(math.isfinite(x) for x in vector)
        assert math.fsum(x * x for x in vector) == pytest.approx(1.0, abs=1e-5)


def test_no_texts_give_no_vectors():
    assert LocalMiniLMEmbedder().embed([]) == []


def test_every_embedder_shares_one_session():
    assert LocalMiniLMEmbedder().session is LocalMiniLMEmbedder().session


def test_racing_threads_load_the_model_once(monkeypatch):
    loaded = local_minilm.get_model()
    loads = []

    def slow_load():
        loads.append(1)
        time.sleep(0.2)  # wide enough for every thread to arrive while the first loads
        return loaded

    monkeypatch.setattr(local_minilm, "_model", None)
    monkeypatch.setattr(local_minilm, "_load_model", slow_load)
    threads = [threading.Thread(target=local_minilm.get_model) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1


def test_the_adapter_embeds_like_the_embedder():
    vectors = asyncio.run(make_adapter().embed([CAT, STOCKS], "all-MiniLM-L6-v2"))
    assert vectors == LocalMiniLMEmbedder().embed([CAT, STOCKS])


def test_the_adapter_refuses_another_model_by_name():
    with pytest.raises(AdapterError, match="only serves 'all-MiniLM-L6-v2'") as caught:
        asyncio.run(make_adapter().embed([CAT], "text-embedding-3-small"))
    assert caught.value.permanent


def test_the_adapter_refuses_chat_for_good():
    with pytest.raises(AdapterError, match="only computes embeddings") as caught:
        asyncio.run(make_adapter().complete([{"role": "user", "content": "hi"}], "", {}))
    assert caught.value.permanent


def test_the_connection_test_loads_the_model():
    report = asyncio.run(make_adapter().test_connection())
    assert report["ok"], report["error"]
    assert report["models"] == ["all-MiniLM-L6-v2"]
