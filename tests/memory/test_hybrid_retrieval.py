"""Keyword (FTS5 BM25) search in the SQLite store, RRF fusion, hybrid retrieval and re-ranking."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from keel.errors import ConfigError
from keel.memory.base import Hit, VectorRecord
from keel.memory.onnx_embedder import MiniLMEmbedder
from keel.memory.retrieval import EmbeddingReranker, Retriever, reciprocal_rank_fusion
from keel.memory.sqlite_store import SQLiteVectorStore, fts_query
from keel.memory.testing import HashingEmbedder

TEXTS = {
    "a": "The compressor blade vibrates at high Mach numbers.",
    "b": "Boundary layer transition on a flat plate in supersonic flow.",
    "c": "Heat transfer to a blunt body in hypersonic flows.",
    "d": "Part number XJ-9047 is the fuel valve of the second stage.",
}


async def fill(store: SQLiteVectorStore, embedder: HashingEmbedder, namespace: str) -> None:
    vectors = await embedder.embed(list(TEXTS.values()))
    await store.upsert(
        namespace,
        [
            VectorRecord(id=i, vector=v, text=t, metadata={"group": i in "ab"})
            for (i, t), v in zip(TEXTS.items(), vectors, strict=True)
        ],
    )


def test_fts_query_quotes_each_distinct_word() -> None:
    assert fts_query('Flow "over" a PLATE, flow?') == '"flow" OR "over" OR "a" OR "plate"'
    assert fts_query(" ?! ") is None


async def test_keyword_query_ranks_by_bm25_with_stemming(
    hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await fill(hashing_store, hashing, "ns")
    hits = await hashing_store.keyword_query("ns", "hypersonic flow heating", k=3)
    assert [h.id for h in hits] == ["c", "b"]  # "flows" matches "flow"; "a" has neither word
    assert hits[0].score > hits[1].score > 0
    assert await hashing_store.keyword_query("ns", "?", k=3) == []
    assert await hashing_store.keyword_query("other", "flow", k=3) == []
    grouped = await hashing_store.keyword_query("ns", "flow", k=3, where={"group": True})
    assert [h.id for h in grouped] == ["b"]


async def test_keyword_index_follows_upserts_and_deletes(
    hashing_store: SQLiteVectorStore, hashing: HashingEmbedder
) -> None:
    await fill(hashing_store, hashing, "ns")
    vector = (await hashing.embed(["x"]))[0]
    await hashing_store.upsert(
        "ns", [VectorRecord(id="c", vector=vector, text="now about rockets")]
    )
    await hashing_store.delete("ns", ["b"])
    assert await hashing_store.keyword_query("ns", "flow", k=5) == []
    assert [h.id for h in await hashing_store.keyword_query("ns", "rockets", k=5)] == ["c"]


async def test_a_store_without_a_keyword_index_gets_one(tmp_path: Path) -> None:
    embedder = HashingEmbedder(32)
    store = SQLiteVectorStore(tmp_path / "old.db", 32)
    await fill(store, embedder, "ns")
    await store.close()
    db = sqlite3.connect(tmp_path / "old.db")
    for trigger in ("insert", "delete", "update"):
        db.execute(f"DROP TRIGGER vector_fts_{trigger}")
    db.execute("DROP TABLE vector_fts")
    db.commit()
    db.close()

    reopened = SQLiteVectorStore(tmp_path / "old.db", 32)
    assert [h.id for h in await reopened.keyword_query("ns", "valve", k=2)] == ["d"]
    await reopened.close()


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    def hits(*ids: str) -> list[Hit]:
        return [Hit(id=i, score=0.0, text=i) for i in ids]

    fused = reciprocal_rank_fusion([hits("a", "b", "c"), hits("b", "d", "a")], rrf_k=60)
    assert [h.id for h in fused] == ["b", "a", "d", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61 + 1 / 63)


async def test_hybrid_finds_what_only_keywords_find(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    store = SQLiteVectorStore(tmp_path / "m.db", minilm.dimension)
    vectors = await minilm.embed(list(TEXTS.values()))
    await store.upsert(
        "ns",
        [
            VectorRecord(id=i, vector=v, text=t)
            for (i, t), v in zip(TEXTS.items(), vectors, strict=True)
        ],
    )
    query = "XJ-9047"
    hybrid = await Retriever(store, minilm, mode="hybrid").retrieve(query, "ns", k=2)
    keyword = await Retriever(store, minilm, mode="keyword").retrieve(query, "ns", k=2)
    assert hybrid[0].id == keyword[0].id == "d"
    assert hybrid[0].score == pytest.approx(2 / 61)  # first in both rankings

    reranked = await Retriever(
        store, minilm, mode="hybrid", reranker=EmbeddingReranker(minilm)
    ).retrieve("supersonic boundary layer", "ns", k=2)
    assert reranked[0].id == "b"
    assert 0.3 < reranked[0].score <= 1.0  # a cosine similarity again
    await store.close()


def test_keyword_modes_need_a_store_with_keyword_search(hashing: HashingEmbedder) -> None:
    from keel.memory.base import VectorStore

    class VectorOnly(VectorStore):  # the ABC alone: no keyword_query
        upsert = delete = query = count = close = None  # type: ignore[assignment]

    VectorOnly.__abstractmethods__ = frozenset()
    with pytest.raises(ConfigError, match="no keyword search"):
        Retriever(VectorOnly(), hashing, mode="hybrid")
    with pytest.raises(ConfigError, match="unknown retrieval mode"):
        Retriever(VectorOnly(), hashing, mode="fuzzy")  # type: ignore[arg-type]
