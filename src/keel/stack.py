"""Wiring of the embedded stack from one ``KeelSettings``: model, memory, tracing.

The CLI and scripts use these helpers; library users may build the same objects by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from keel.config import KeelSettings
from keel.errors import DocumentError

if TYPE_CHECKING:
    from keel.distributed.base import Executor
    from keel.graph.grounded import DocumentQA
    from keel.llm.base import Model
    from keel.memory.base import Embedder, VectorStore
    from keel.memory.ingest import IngestProgress, IngestReport
    from keel.observe.base import TraceStore

__all__ = ["Memory", "docs_namespace", "open_memory", "open_model", "open_tracing"]


def docs_namespace(path: Path) -> str:
    """The vector-memory namespace of a document folder: stable for its absolute path."""
    resolved = str(path.expanduser().resolve())
    return "docs-" + hashlib.sha256(resolved.encode()).hexdigest()[:16]


def open_tracing(settings: KeelSettings) -> TraceStore | None:
    """Send spans to the local trace store and/or OTLP as ``[trace]`` says; None when there
    is no local store (tracing disabled, or OTLP only)."""
    if not settings.trace.enabled:
        return None
    from keel.observe.tracing import setup_from_settings

    return setup_from_settings(settings.trace, settings.trace_path)


def open_model(settings: KeelSettings, spec: str | None = None) -> Model:
    """The configured model stack: each model with its timeout and retries, the fallback chain
    (a circuit breaker per model) when ``llm.fallback`` names more models, GenAI tracing,
    budgets (``keel.budget``) when a ``BudgetMeter`` is active, and the response cache
    (``keel.cache``) when ``cache.enabled``."""
    from keel.llm import FallbackModel, InstrumentedModel, RetryModel, TimeoutModel, create_model

    llm = settings.llm
    specs = [spec or llm.model, *llm.fallback]
    chain: list[Model] = []
    for each in specs:
        model = create_model(llm, each)
        if llm.timeout_s is not None:
            model = TimeoutModel(model, timeout=llm.timeout_s)
        if llm.retries:
            model = RetryModel(model, max_attempts=llm.retries + 1)
        chain.append(model)
    stacked = chain[0] if len(chain) == 1 else FallbackModel(chain)
    traced = InstrumentedModel(stacked, provider=specs[0].partition(":")[0])
    # Budgets apply inside an ``async with BudgetMeter(...)`` block; outside one this wrapper
    # calls the model unchanged.
    from keel.budget.meter import BudgetedModel

    budgeted = BudgetedModel(traced, max_tokens=llm.max_tokens)
    if not settings.cache.enabled:
        return budgeted
    # Outermost, so a hit spends no budget and makes no chat span (only a ``cache`` span).
    from keel.cache.factory import cached_model

    local = specs[0].partition(":")[0] == "local"  # its default temperature is llm.temperature
    return cached_model(budgeted, settings, default_temperature=llm.temperature if local else None)


@dataclass
class Memory:
    """The embedded document memory: embedder, vector store and ingestor over one SQLite file."""

    embedder: Embedder
    store: VectorStore
    settings: KeelSettings

    async def ingest(
        self,
        path: Path,
        progress: Callable[[IngestProgress], None] | None = None,
        namespace: str | None = None,
        executor: Executor | None = None,
    ) -> IngestReport:
        """Ingest ``path`` incrementally into ``namespace`` (default: one derived from the path);
        with an ``executor``, files are loaded, chunked and embedded as its tasks."""
        import functools

        from keel.memory.factory import create_embedder
        from keel.memory.ingest import DocumentIngestor

        if not path.exists():  # noqa: ASYNC240 - one stat, before any slow work
            raise DocumentError(f"document path does not exist: {path}")
        distributed = self.settings.distributed
        ingestor = DocumentIngestor(
            self.store,
            self.embedder,
            self.settings.memory_path,
            max_chars=self.settings.memory.chunk_chars,
            overlap=self.settings.memory.chunk_overlap,
            executor=executor,
            worker_embedder=functools.partial(create_embedder, self.settings.embeddings),
            batch_size=distributed.batch_size,
            embed_batch_size=distributed.embed_batch_size,
        )
        return await ingestor.ingest(path, namespace or docs_namespace(path), progress)

    def question_answerer(self, model: Model, path: Path) -> DocumentQA:
        from keel.graph.grounded import DocumentQA
        from keel.memory.retrieval import Retriever

        return DocumentQA(
            model,
            Retriever(self.store, self.embedder),
            namespace=docs_namespace(path),
            top_k=self.settings.memory.top_k,
        )

    async def close(self) -> None:
        await self.store.close()


def open_memory(settings: KeelSettings) -> Memory:
    """The configured embedder (local MiniLM by default) and vector store (``memory.backend``:
    the embedded SQLite store under ``settings.data_dir`` by default, or pgvector or Qdrant)."""
    from keel.memory import create_embedder, create_vector_store

    embedder = create_embedder(settings.embeddings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = create_vector_store(settings.memory_path, embedder.dimension, settings.memory)
    return Memory(embedder=embedder, store=store, settings=settings)
