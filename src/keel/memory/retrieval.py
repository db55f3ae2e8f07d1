"""Retrieval: embed a question and find the nearest chunks, traced as a GenAI ``retrieval`` span.

Only the OpenTelemetry API is used, so spans cost nothing until an application configures a
tracer provider (``keel.observe`` does).
"""

from __future__ import annotations

from opentelemetry import trace

from keel.memory.base import Embedder, Hit, VectorStore

__all__ = ["Retriever"]

_tracer = trace.get_tracer("keel.memory")


class Retriever:
    """Finds the chunks of one namespace most similar to a query."""

    def __init__(self, store: VectorStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder

    async def retrieve(self, query: str, namespace: str, k: int) -> list[Hit]:
        """The ``k`` best chunks for ``query``, best first (fewer if the namespace is smaller)."""
        if not query.strip():
            raise ValueError("the query is empty")
        if k < 1:
            raise ValueError("k must be >= 1")
        with _tracer.start_as_current_span(f"retrieval {namespace}") as span:
            span.set_attribute("gen_ai.operation.name", "retrieval")
            span.set_attribute("gen_ai.request.model", self.embedder.name)
            span.set_attribute("gen_ai.embeddings.model", self.embedder.name)
            span.set_attribute("keel.retrieval.namespace", namespace)
            span.set_attribute("keel.retrieval.k", k)
            (vector,) = await self.embedder.embed([query])
            hits = await self.store.query(namespace, vector, k)
            span.set_attribute("keel.retrieval.hits", len(hits))
            if hits:
                span.set_attribute("keel.retrieval.top_score", hits[0].score)
            return hits
