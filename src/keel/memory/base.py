"""The memory layer's protocols: ``Embedder`` turns text into vectors, ``VectorStore`` keeps them.

Both are small on purpose, so a local ONNX model and a hosted endpoint, or a SQLite file and a
PostgreSQL server, are interchangeable behind them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Embedder",
    "Hit",
    "KeywordSearch",
    "MetadataValue",
    "Reranker",
    "TokenCounting",
    "VectorRecord",
    "VectorStore",
]

MetadataValue = str | int | float | bool
"""A metadata value: scalar, so every backend can store it and filter on it."""


class VectorRecord(BaseModel):
    """One vector to store, with the text it was made from and metadata to filter on."""

    model_config = ConfigDict(frozen=True)

    id: str
    vector: list[float]
    text: str
    metadata: dict[str, MetadataValue] = {}


class Hit(BaseModel):
    """One query result: a stored record and its cosine similarity to the query."""

    model_config = ConfigDict(frozen=True)

    id: str
    score: float
    text: str
    metadata: dict[str, MetadataValue] = {}


class Embedder(ABC):
    """Turns texts into unit-length vectors of a fixed dimension."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The model's name, as traces and stored metadata report it."""

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of every vector this embedder returns."""

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-normalised vector per text, in order; batching is the embedder's business."""


class VectorStore(ABC):
    """Stores vectors in namespaces and finds the nearest ones by cosine similarity.

    A namespace is a separate collection: ids are unique within it, and a query never returns
    records from another namespace.
    """

    @abstractmethod
    async def upsert(self, namespace: str, records: Sequence[VectorRecord]) -> None:
        """Insert the records, replacing any with the same id in ``namespace``."""

    @abstractmethod
    async def delete(self, namespace: str, ids: Sequence[str]) -> None:
        """Remove the records with these ids from ``namespace``; unknown ids are ignored."""

    @abstractmethod
    async def query(
        self,
        namespace: str,
        vector: Sequence[float],
        k: int,
        where: Mapping[str, MetadataValue] | None = None,
    ) -> list[Hit]:
        """The ``k`` records most similar to ``vector``, best first.

        ``where`` keeps only records whose metadata has every given key with an equal value
        (a bool only equals a bool).
        """

    @abstractmethod
    async def count(self, namespace: str) -> int:
        """Number of records in ``namespace``."""

    @abstractmethod
    async def close(self) -> None:
        """Flush what needs flushing and release files and connections; safe to call twice."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@runtime_checkable
class TokenCounting(Protocol):
    """An embedder that can count tokens as its model sees them, so chunks are sized to fit its
    input window instead of being silently truncated."""

    @property
    def max_input_tokens(self) -> int:
        """Most tokens of text one input may have (special tokens excluded)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text``, without special tokens; blocking (runs in worker threads)."""
        ...


@runtime_checkable
class KeywordSearch(Protocol):
    """A store that can also rank its records by keywords (BM25), for hybrid retrieval."""

    async def keyword_query(
        self,
        namespace: str,
        text: str,
        k: int,
        where: Mapping[str, MetadataValue] | None = None,
    ) -> list[Hit]:
        """The ``k`` records that best match the words of ``text``, best first; the score is a
        BM25 relevance (higher is better, not comparable with cosine similarities)."""
        ...


class Reranker(ABC):
    """Re-orders retrieved candidates by a finer (slower) relevance judgement of query and text."""

    @abstractmethod
    async def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        """The ``k`` best of ``hits`` for ``query``, best first."""
