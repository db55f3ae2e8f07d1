"""The cache layer's protocol: ``CacheBackend`` stores model responses by key and by vector.

One entry is one model response, stored under a namespace (a tenant, an agent: invalidated as a
whole) and an exact key; when the call ended with a user message, the entry also carries that
message's embedding under a semantic scope (see ``keel.cache.keys``), so a later call in the same
scope with a similar message can find it. Entries expire after their TTL.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from keel.llm.messages import Response

__all__ = [
    "CacheBackend",
    "CacheEntry",
    "CacheStats",
    "NamespaceStats",
    "SemanticItem",
    "SemanticMatch",
    "in_namespace",
]


class CacheEntry(BaseModel):
    """A stored model response and what it was the answer to."""

    model_config = ConfigDict(frozen=True)

    key: str
    """The exact key of the call (``keel.cache.keys.cache_key``)."""
    response: Response
    """The response as the model gave it, usage included (a hit reports zero usage)."""
    text: str | None = None
    """The last user message of the call, when it had one (kept for inspection)."""
    created_at: float = Field(default_factory=time.time)
    expires_at: float | None = None
    """Unix time after which the entry is gone; None: never expires."""


class SemanticMatch(BaseModel):
    """The entry nearest to a query vector, and its cosine similarity."""

    model_config = ConfigDict(frozen=True)

    entry: CacheEntry
    similarity: float


class SemanticItem(BaseModel):
    """What the semantic index stores with an entry."""

    model_config = ConfigDict(frozen=True)

    scope: str
    vector: list[float]


class NamespaceStats(BaseModel):
    namespace: str
    entries: int
    semantic_entries: int


class CacheStats(BaseModel):
    """What a backend holds now (live entries only)."""

    backend: str
    location: str
    entries: int
    semantic_entries: int
    namespaces: list[NamespaceStats]


class CacheBackend(ABC):
    """Stores ``CacheEntry``s by (namespace, exact key), and by vector within a semantic scope.

    Namespaces are separate: nothing is found across them. ``clear(ns)`` removes ``ns`` and every
    namespace below it (``tenant`` clears ``tenant/agent``). Expired entries are never returned.
    """

    name: str = "cache"

    @abstractmethod
    async def get(self, namespace: str, key: str) -> CacheEntry | None:
        """The live entry stored under ``key``, or None."""

    @abstractmethod
    async def put(
        self,
        namespace: str,
        entry: CacheEntry,
        semantic: SemanticItem | None = None,
    ) -> None:
        """Store ``entry`` (replacing one with the same key); with ``semantic``, index it too."""

    @abstractmethod
    async def nearest(
        self, namespace: str, scope: str, vector: Sequence[float], min_similarity: float
    ) -> SemanticMatch | None:
        """The live entry of ``scope`` nearest to ``vector``, if at least ``min_similarity``."""

    @abstractmethod
    async def clear(self, namespace: str | None = None) -> int:
        """Remove the entries of ``namespace`` and the namespaces below it (all if None);
        returns how many entries were removed."""

    @abstractmethod
    async def stats(self) -> CacheStats:
        """Live entries per namespace."""

    async def put_many(
        self, namespace: str, items: Sequence[tuple[CacheEntry, SemanticItem | None]]
    ) -> None:
        """Store several entries; backends override it to batch the writes."""
        for entry, semantic in items:
            await self.put(namespace, entry, semantic)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections; safe to call twice."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def in_namespace(name: str, namespace: str | None) -> bool:
    """True when ``name`` is ``namespace`` or below it (``a/b`` is below ``a``)."""
    return namespace is None or name == namespace or name.startswith(namespace + "/")
