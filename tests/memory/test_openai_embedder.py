"""The OpenAI-compatible embedder, through the official SDK, against a real local HTTP server
that serves ``/v1/embeddings`` with the real MiniLM model behind it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from embeddings_server import EmbeddingsServer, serve_embeddings

from keel.errors import (
    ConfigError,
    EmbeddingDimensionError,
    ModelRequestError,
    ModelUnavailableError,
)
from keel.llm.provider import Provider, compatible_provider
from keel.memory.cache import CachedEmbedder
from keel.memory.onnx_embedder import MiniLMEmbedder
from keel.memory.openai_embedder import OpenAIEmbedder, parse_embeddings
from keel.memory.testing import HashingEmbedder

KEY = "sk-test-0123456789abcdef-secret"
TEXTS = [
    "PostgreSQL stores rows in heap pages.",
    "The cat sat on the mat.",
    "A kitten is sleeping on a rug.",
    "Quarterly revenue grew by four percent.",
    "pgvector adds an HNSW index to PostgreSQL.",
]


@pytest.fixture
def hashing_server() -> Iterator[EmbeddingsServer]:
    embedder = HashingEmbedder(dimension=32)
    with serve_embeddings(lambda texts: asyncio.run(embedder.embed(texts))) as server:
        yield server


def provider(server: EmbeddingsServer, monkeypatch: pytest.MonkeyPatch) -> Provider:
    monkeypatch.setenv("KEEL_TEST_EMBEDDINGS_KEY", KEY)
    return compatible_provider(
        server.url, name="test-server", api_key_env="KEEL_TEST_EMBEDDINGS_KEY"
    )


@pytest.mark.slow
async def test_minilm_over_http_matches_minilm_in_process(
    minilm: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with serve_embeddings(minilm.embed_sync) as server:
        remote = OpenAIEmbedder(server.model, provider(server, monkeypatch), batch_size=2)
        assert await remote.discover_dimension() == 384
        server.requests.clear()
        vectors = await remote.embed(TEXTS)
        assert len(server.requests) == 3  # batches of 2, 2 and 1
        assert [len(r["input"]) for r in server.requests] == [2, 2, 1]
        assert set(server.authorizations) == {f"Bearer {KEY}"}
        local = await minilm.embed(TEXTS)
        for a, b in zip(vectors, local, strict=True):
            assert sum(x * y for x, y in zip(a, b, strict=True)) == pytest.approx(1.0, abs=1e-5)
            assert math.fsum(x * x for x in a) == pytest.approx(1.0, abs=1e-6)
        # The server returned items in reverse order: the embedder used their indexes.
        cat, kitten, revenue = vectors[1], vectors[2], vectors[3]
        assert sum(x * y for x, y in zip(cat, kitten, strict=True)) > sum(
            x * y for x, y in zip(cat, revenue, strict=True)
        )
        assert remote.input_tokens > 0

        cached = CachedEmbedder(remote, tmp_path / "cache.db")
        server.requests.clear()
        first = await cached.embed(TEXTS)
        assert len(server.requests) == 3
        again = await cached.embed([TEXTS[4], TEXTS[0], "A new sentence."])
        assert [r["input"] for r in server.requests[3:]] == [["A new sentence."]]
        assert again[0] == pytest.approx(first[4], abs=1e-6)  # stored as float32
        assert again[1] == pytest.approx(first[0], abs=1e-6)
        cached.close()
        await remote.aclose()


async def test_the_dimension_is_configured_known_or_discovered(
    hashing_server: EmbeddingsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = OpenAIEmbedder("some-model", provider(hashing_server, monkeypatch))
    with pytest.raises(ConfigError, match="not known yet"):
        _ = unknown.dimension
    assert unknown.discover_dimension_sync() == 32  # the blocking probe, for sync wiring
    assert unknown.dimension == 32
    assert (
        OpenAIEmbedder("text-embedding-3-small", provider(hashing_server, monkeypatch)).dimension
        == 1536
    )
    wrong = OpenAIEmbedder("some-model", provider(hashing_server, monkeypatch), dimension=64)
    with pytest.raises(EmbeddingDimensionError, match="dimension 32, expected 64") as caught:
        await wrong.embed(["hello"])
    assert "embeddings.dimension" in (caught.value.hint or "")
    assert await OpenAIEmbedder("m", provider(hashing_server, monkeypatch)).embed([]) == []


@pytest.mark.parametrize(
    ("mode", "error", "match"),
    [
        ("500", ModelUnavailableError, "HTTP 500"),
        ("401", ModelRequestError, "refused the credentials"),
        ("malformed", ModelUnavailableError, "malformed embeddings reply: no 'data' list"),
        ("not-json", ModelUnavailableError, "not JSON"),
        ("short", ModelUnavailableError, "2 embeddings for 3 inputs"),
    ],
)
async def test_failures_are_typed_and_never_leak_the_key(
    hashing_server: EmbeddingsServer,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    error: type[Exception],
    match: str,
) -> None:
    hashing_server.mode = mode
    embedder = OpenAIEmbedder("m", provider(hashing_server, monkeypatch))
    with pytest.raises(error, match=match) as caught:
        await embedder.embed(["a", "b", "c"])
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)
    assert KEY not in repr(embedder) + repr(embedder.provider)
    if mode == "401":
        assert "KEEL_TEST_EMBEDDINGS_KEY" in (caught.value.hint or "")  # type: ignore[attr-defined]
    await embedder.aclose()


async def test_an_unreachable_server_is_retryable_and_a_missing_key_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = OpenAIEmbedder("m", compatible_provider("http://127.0.0.1:9/v1"))
    with pytest.raises(ModelUnavailableError, match="connection"):
        await dead.embed(["x"])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="no API key for openai"):
        OpenAIEmbedder("text-embedding-3-small")


def test_parse_embeddings_refuses_what_it_cannot_trust() -> None:
    def body(*vectors: object, index: list[int] | None = None) -> dict[str, object]:
        idx = index or list(range(len(vectors)))
        return {"data": [{"index": i, "embedding": v} for i, v in zip(idx, vectors, strict=True)]}

    assert parse_embeddings(body([3.0, 4.0]), 1, "s") == [[0.6, 0.8]]
    bad = [
        (body([1.0], [1.0, 2.0]), 2, "different lengths"),
        (body([0.0, 0.0]), 1, "zero or not finite"),
        (body(["1", 2]), 1, "not a list of numbers"),
        (body([True, 1.0]), 1, "not a list of numbers"),
        (body([1.0], [1.0], index=[0, 0]), 2, "repeated index"),
        (body([1.0], index=[5]), 1, "bad or repeated index"),
        ({"data": [{"index": 0}]}, 1, "no 'embedding' list"),
        ([], 1, "no 'data' list"),
    ]
    for payload, count, match in bad:
        with pytest.raises(ModelUnavailableError, match=match):
            parse_embeddings(payload, count, "s")
