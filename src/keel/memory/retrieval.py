"""Retrieval: vector, keyword (BM25) or hybrid search, traced as a GenAI ``retrieval`` span.

Hybrid retrieval fuses the vector and the keyword rankings by reciprocal rank fusion (RRF): each
candidate scores ``sum(1 / (rrf_k + rank))`` over the rankings it appears in, so neither score
scale has to be calibrated against the other. An optional ``Reranker`` re-orders the fused
candidates. Only the OpenTelemetry API is used, so spans cost nothing until an application
configures a tracer provider (``keel.observe`` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from opentelemetry import trace

from keel.errors import ConfigError
from keel.memory.base import Embedder, Hit, KeywordSearch, MetadataValue, Reranker, VectorStore
from keel.observe.content import capture_enabled, captured
from keel.observe.semconv import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    KEEL_RETRIEVAL_QUERY,
    OPERATION_RETRIEVAL,
)

__all__ = ["EmbeddingReranker", "RetrievalMode", "Retriever", "reciprocal_rank_fusion"]

_tracer = trace.get_tracer("keel.memory")

RetrievalMode = Literal["vector", "keyword", "hybrid"]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], rrf_k: int = 60) -> list[Hit]:
    """The union of ``rankings``, best first by RRF score (which becomes each hit's ``score``).

    A hit keeps the text and metadata of its first appearance; ties keep first-seen order.
    """
    fused: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (rrf_k + rank)
            first.setdefault(hit.id, hit)
    order = sorted(fused, key=lambda i: -fused[i])
    return [first[i].model_copy(update={"score": fused[i]}) for i in order]


class Retriever:
    """Finds the chunks of one namespace most relevant to a query.

    ``mode`` is ``"vector"`` (cosine similarity; scores are similarities), ``"keyword"`` (BM25;
    the store must support ``KeywordSearch``) or ``"hybrid"`` (both, fused by RRF; scores are RRF
    scores). ``candidates`` is how many hits each ranking contributes before fusion/re-ranking.

    On a store without ``KeywordSearch`` (Qdrant), ``"keyword"`` and ``"hybrid"`` raise
    ``ConfigError`` here, at construction: a hybrid search never quietly becomes a vector-only
    one. Callers that want "hybrid where possible" choose the mode by
    ``isinstance(store, KeywordSearch)``, as ``keel memory search`` does.
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        *,
        mode: RetrievalMode = "vector",
        reranker: Reranker | None = None,
        candidates: int = 50,
        rrf_k: int = 60,
    ) -> None:
        if mode not in ("vector", "keyword", "hybrid"):
            raise ConfigError(
                f"unknown retrieval mode {mode!r}", hint="valid: 'vector', 'keyword', 'hybrid'"
            )
        if mode != "vector" and not isinstance(store, KeywordSearch):
            raise ConfigError(
                f"{type(store).__name__} has no keyword search, so mode {mode!r} is unavailable",
                hint="use mode='vector'",
            )
        if candidates < 1 or rrf_k < 1:
            raise ValueError("candidates and rrf_k must be >= 1")
        self.store = store
        self.embedder = embedder
        self.mode = mode
        self.reranker = reranker
        self.candidates = candidates
        self.rrf_k = rrf_k

    async def retrieve(
        self,
        query: str,
        namespace: str,
        k: int,
        where: Mapping[str, MetadataValue] | None = None,
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query``, best first (fewer if the namespace is smaller)."""
        if not query.strip():
            raise ValueError("the query is empty")
        if k < 1:
            raise ValueError("k must be >= 1")
        with _tracer.start_as_current_span(f"retrieval {namespace}") as span:
            span.set_attribute(GEN_AI_OPERATION_NAME, OPERATION_RETRIEVAL)
            span.set_attribute(GEN_AI_REQUEST_MODEL, self.embedder.name)
            span.set_attribute("gen_ai.embeddings.model", self.embedder.name)
            span.set_attribute("keel.retrieval.namespace", namespace)
            span.set_attribute("gen_ai.data_source.id", namespace)
            span.set_attribute("keel.retrieval.k", k)
            span.set_attribute("keel.retrieval.mode", self.mode)
            if capture_enabled() and (text := captured(query)) is not None:
                span.set_attribute(KEEL_RETRIEVAL_QUERY, text)
            pool = k if self.mode == "vector" and self.reranker is None else max(k, self.candidates)
            rankings: list[list[Hit]] = []
            if self.mode in ("vector", "hybrid"):
                (vector,) = await self.embedder.embed([query])
                rankings.append(await self.store.query(namespace, vector, pool, where))
            if self.mode in ("keyword", "hybrid"):
                assert isinstance(self.store, KeywordSearch)  # checked in __init__
                rankings.append(await self.store.keyword_query(namespace, query, pool, where))
            hits = (
                rankings[0] if len(rankings) == 1 else reciprocal_rank_fusion(rankings, self.rrf_k)
            )
            if self.reranker is not None:
                span.set_attribute("keel.retrieval.reranker", type(self.reranker).__name__)
                hits = await self.reranker.rerank(query, hits, k)
            hits = hits[:k]
            span.set_attribute("keel.retrieval.hits", len(hits))
            if hits:
                span.set_attribute("keel.retrieval.top_score", hits[0].score)
            return hits


class EmbeddingReranker(Reranker):
    """Re-scores candidates by cosine similarity to the query under ``embedder``.

    Not a cross-encoder (none ships in a wheel that runs offline here); its use is to put
    similarity scores back on fused hybrid hits, or to re-rank with a stronger embedder than the
    one the index was built with.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    async def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        if not hits:
            return []
        query_vector, *vectors = await self.embedder.embed([query, *(h.text for h in hits)])
        scored = [
            hit.model_copy(
                update={"score": sum(a * b for a, b in zip(query_vector, v, strict=True))}
            )
            for hit, v in zip(hits, vectors, strict=True)
        ]
        scored.sort(key=lambda h: -h.score)
        return scored[:k]
