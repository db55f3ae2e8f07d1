"""An embedding cache keyed by content hash, so text that was embedded once is never embedded again.

``CachedEmbedder`` wraps any ``Embedder`` (a wrapper, not a flag): vectors are stored in a SQLite
table under (model name, sha256 of the text). Re-ingesting a changed file embeds only the chunks
whose text is new; a chunk that merely moved, or a store rebuilt from scratch, costs a lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from array import array
from collections.abc import Sequence
from pathlib import Path

from keel.errors import StoreError
from keel.memory.base import Embedder

__all__ = ["CachedEmbedder"]


def text_sha256(text: str) -> str:
    """The cache key of a text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CachedEmbedder(Embedder):
    """An embedder that looks every text up in a SQLite cache before asking ``inner``."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner = inner
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embedding_cache (model TEXT NOT NULL, "
                "sha256 TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, sha256)) "
                "WITHOUT ROWID"
            )
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the embedding cache {self.path}: {e}") from e
        self._closed = False

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        keys = [text_sha256(text) for text in texts]
        found = await asyncio.to_thread(self._lookup, sorted(set(keys)))
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in found}
        if missing:
            vectors = await self.inner.embed(list(missing.values()))
            if len(vectors) != len(missing):
                raise StoreError(
                    f"embedder {self.inner.name} returned {len(vectors)} vectors "
                    f"for {len(missing)} texts"
                )
            fresh = dict(zip(missing, vectors, strict=True))
            await asyncio.to_thread(self._store, fresh)
            found.update(fresh)
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        return [found[key] for key in keys]

    def count(self) -> int:
        """Vectors cached for this embedder's model."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM embedding_cache WHERE model = ?", (self.name,)
            ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Closes the cache file; safe to call twice."""
        with self._lock:
            if not self._closed:
                self._db.close()
                self._closed = True

    def _lookup(self, keys: list[str]) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        with self._lock:
            try:
                for start in range(0, len(keys), 500):
                    batch = keys[start : start + 500]
                    marks = ",".join("?" * len(batch))
                    for key, blob in self._db.execute(
                        f"SELECT sha256, vector FROM embedding_cache WHERE model = ? "
                        f"AND sha256 IN ({marks})",
                        [self.name, *batch],
                    ):
                        vector = array("f")
                        vector.frombytes(blob)
                        if len(vector) == self.dimension:
                            found[key] = vector.tolist()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read the embedding cache {self.path}: {e}") from e
        return found

    def _store(self, vectors: dict[str, list[float]]) -> None:
        rows = [(self.name, key, array("f", v).tobytes()) for key, v in vectors.items()]
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO embedding_cache VALUES (?, ?, ?)", rows
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"cannot write the embedding cache {self.path}: {e}") from e
