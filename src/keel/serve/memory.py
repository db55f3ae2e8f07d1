"""Vector memory seen through a tenant: every namespace is prefixed with the tenant's name.

The prefix is applied here, below the routes, so no request can name another tenant's namespace:
a tenant only ever passes the short name (``docs``) and this layer turns it into
``tenant:<tenant>:docs``. The embedder and store are opened on first use (loading the embedding
model takes a moment), or handed in.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from keel.errors import ServeError
from keel.serve.base import check_tenant

if TYPE_CHECKING:
    from keel.memory.base import Embedder, Hit, MetadataValue, VectorStore
    from keel.memory.retrieval import Retriever

__all__ = ["TenantMemory"]


class TenantMemory:
    """Per-tenant namespaces over one embedder and one vector store."""

    def __init__(
        self,
        opener: Callable[[], tuple[Embedder, VectorStore]],
        *,
        chunk_chars: int = 1000,
        chunk_overlap: int = 100,
    ) -> None:
        self._opener = opener
        self._opened: tuple[Embedder, VectorStore] | None = None
        self._lock = threading.Lock()
        self.chunk_chars = chunk_chars
        self.chunk_overlap = chunk_overlap

    def _open_now(self) -> tuple[Embedder, VectorStore]:
        with self._lock:
            if self._opened is None:
                self._opened = self._opener()
            return self._opened

    async def _open(self) -> tuple[Embedder, VectorStore]:
        """Open on first use in a worker thread (loading a model must not stall the loop)."""
        if self._opened is not None:
            return self._opened
        return await asyncio.to_thread(self._open_now)

    @staticmethod
    def namespace(tenant: str, name: str) -> str:
        """The store namespace of the tenant's namespace ``name``."""
        check_tenant(tenant)
        try:
            check_tenant(name)
        except ServeError:
            raise ServeError(
                f"invalid namespace name {name!r}",
                hint="use 1-63 lowercase letters, digits, '-' or '_'",
            ) from None
        return f"tenant:{tenant}:{name}"

    async def retriever(self) -> Retriever:
        from keel.memory.retrieval import Retriever

        embedder, store = await self._open()
        return Retriever(store, embedder)

    async def add(
        self,
        tenant: str,
        name: str,
        documents: Sequence[tuple[str, str, dict[str, MetadataValue]]],
    ) -> int:
        """Chunk, embed and store ``(source, text, metadata)`` documents; return the chunks.

        A document added again under the same source replaces its chunks with the same index."""
        from keel.memory.base import VectorRecord
        from keel.memory.chunking import chunk_markdown

        namespace = self.namespace(tenant, name)
        embedder, store = await self._open()
        records: list[tuple[str, str, dict[str, MetadataValue]]] = []
        for source, text, metadata in documents:
            for chunk in chunk_markdown(
                text, max_chars=self.chunk_chars, overlap=self.chunk_overlap
            ):
                key = hashlib.sha256(f"{source}\0{chunk.index}".encode()).hexdigest()[:24]
                meta: dict[str, MetadataValue] = {
                    **metadata,
                    "source": source,
                    "heading": chunk.heading,
                    "chunk": chunk.index,
                }
                records.append((key, chunk.text, meta))
        if not records:
            return 0
        vectors = await embedder.embed([text for _, text, _ in records])
        await store.upsert(
            namespace,
            [
                VectorRecord(id=key, vector=vector, text=text, metadata=meta)
                for (key, text, meta), vector in zip(records, vectors, strict=True)
            ],
        )
        return len(records)

    async def search(self, tenant: str, name: str, query: str, k: int) -> list[Hit]:
        """The ``k`` chunks of the tenant's namespace most similar to ``query``."""
        namespace = self.namespace(tenant, name)
        return await (await self.retriever()).retrieve(query, namespace, k)

    async def count(self, tenant: str, name: str) -> int:
        _, store = await self._open()
        return await store.count(self.namespace(tenant, name))

    async def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, None
        if opened is not None:
            await opened[1].close()
