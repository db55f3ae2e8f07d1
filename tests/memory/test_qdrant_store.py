"""The Qdrant store in qdrant-client's local mode (no Qdrant server can run here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vector_store_conformance import DIM, OpenStore, VectorStoreConformance, record, vec

from keel.errors import ConfigError, StoreError
from keel.memory.base import KeywordSearch, VectorRecord
from keel.memory.qdrant_store import QdrantVectorStore, filter_tokens, point_id
from keel.memory.retrieval import Retriever
from keel.memory.testing import HashingEmbedder


class TestQdrantLocalOnDisk(VectorStoreConformance):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda: QdrantVectorStore(DIM, path=tmp_path / "qdrant")


async def test_point_ids_are_deterministic_uuids_per_namespace() -> None:
    assert point_id("ns", "a") == point_id("ns", "a")
    assert point_id("ns", "a") != point_id("other", "a")
    assert point_id("a", "b/c") != point_id("a/b", "c")  # no ambiguous concatenation
    assert len(point_id("ns", "a")) == 36


def test_filter_tokens_compare_like_python_values() -> None:
    assert filter_tokens({"n": 1}) == filter_tokens({"n": 1.0})
    assert filter_tokens({"n": 1}) != filter_tokens({"n": True})
    assert filter_tokens({"n": 1}) != filter_tokens({"n": "1"})
    assert filter_tokens({"a.b": "x"}) != filter_tokens({"a": "b.x"})


async def test_dotted_keys_and_the_original_id_survive(tmp_path: Path) -> None:
    store = QdrantVectorStore(DIM, location=":memory:")
    await store.upsert("ns", [record("doc.md#3", vec(1.0), **{"source.path": "a/b.md"})])
    hits = await store.query("ns", vec(1.0), k=1, where={"source.path": "a/b.md"})
    assert [(h.id, h.metadata) for h in hits] == [("doc.md#3", {"source.path": "a/b.md"})]
    assert await store.namespaces() == {"ns": 1}
    await store.close()


async def test_the_collection_dimension_is_checked(tmp_path: Path) -> None:
    store = QdrantVectorStore(DIM, path=tmp_path / "q")
    await store.upsert("ns", [record("a", vec(1.0))])
    await store.close()
    other = QdrantVectorStore(DIM + 1, path=tmp_path / "q")
    with pytest.raises(StoreError, match=f"dimension {DIM} .*not {DIM + 1}"):
        await other.count("ns")
    await other.close()


async def test_a_folder_in_use_is_a_store_error(tmp_path: Path) -> None:
    first = QdrantVectorStore(DIM, path=tmp_path / "q")
    with pytest.raises(StoreError, match="one client per folder"):
        QdrantVectorStore(DIM, path=tmp_path / "q")
    await first.close()


def test_exactly_one_target_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        QdrantVectorStore(DIM)
    with pytest.raises(ConfigError, match="exactly one"):
        QdrantVectorStore(DIM, path=tmp_path, location=":memory:")


async def test_hybrid_is_refused_clearly_and_vector_retrieval_works() -> None:
    embedder = HashingEmbedder(dimension=64)
    store = QdrantVectorStore(64, location=":memory:")
    assert not isinstance(store, KeywordSearch)
    with pytest.raises(ConfigError, match="no keyword search"):
        Retriever(store, embedder, mode="hybrid")
    texts = ["qdrant stores points", "postgres stores rows"]
    vectors = await embedder.embed(texts)
    await store.upsert(
        "docs", [VectorRecord(id=t, vector=v, text=t) for t, v in zip(texts, vectors, strict=True)]
    )
    hits = await Retriever(store, embedder, mode="vector").retrieve("qdrant points", "docs", k=1)
    assert [h.id for h in hits] == ["qdrant stores points"]
    await store.close()
