"""``keel memory stats`` for every vector backend.

The embedded store is read straight from its SQLite file (``keel.memory.stats``). A server
backend (pgvector, Qdrant) is asked for its namespaces and record counts; the document manifest
and the embedding cache stay in the local SQLite file under the data directory, whichever backend
holds the vectors, so document counts and cached embeddings still come from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from keel.errors import StoreError

if TYPE_CHECKING:
    from keel.config import KeelSettings
    from keel.memory.stats import MemoryStats

__all__ = ["NamespaceListing", "backend_stats"]


@runtime_checkable
class NamespaceListing(Protocol):
    """A store that can list its namespaces with their record counts."""

    async def namespaces(self) -> dict[str, int]: ...


async def backend_stats(settings: KeelSettings) -> MemoryStats:
    """Namespaces, records, documents and cached embeddings of the configured memory."""
    from keel.memory.stats import MemoryStats, NamespaceStats, memory_stats

    path = settings.memory_path
    if settings.memory.backend == "sqlite":
        return memory_stats(path)
    from keel.memory.factory import create_embedder, create_vector_store, describe_vector_backend

    local = memory_stats(path) if path.is_file() else None
    dimension = create_embedder(settings.embeddings).dimension
    store = create_vector_store(path, dimension, settings.memory)
    try:
        if not isinstance(store, NamespaceListing):
            raise StoreError(f"{type(store).__name__} cannot list its namespaces")
        records = await store.namespaces()
    finally:
        await store.close()
    documents = {ns.namespace: ns.documents for ns in local.namespaces} if local else {}
    return MemoryStats(
        path=describe_vector_backend(settings.memory, path),
        size_bytes=local.size_bytes if local else 0,
        dimension=dimension,
        namespaces=[
            NamespaceStats(namespace=ns, records=records.get(ns, 0), documents=documents.get(ns, 0))
            for ns in sorted(set(records) | set(documents))
        ],
        cached_embeddings=local.cached_embeddings if local else 0,
    )
