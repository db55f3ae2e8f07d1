"""The embedded cache backend: one SQLite file (WAL) and an in-process vector index per scope.

SQLite holds every entry (response, expiry, and for semantic entries the scope and the vector)
and is the truth: the usearch index of a scope only proposes candidates, and each candidate is
read back from SQLite, so an entry that expired, was replaced or was cleared (by this process or
another one sharing the file) is never served; a dead candidate is dropped from the index. Rows
written by other processes are picked up on the next lookup (rows above the index's high-water
id). Large indexes are saved beside the file on ``close()`` and reloaded instead of rebuilt.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from keel.cache.base import (
    CacheBackend,
    CacheEntry,
    CacheStats,
    NamespaceStats,
    SemanticItem,
    SemanticMatch,
    in_namespace,
)
from keel.errors import CacheError
from keel.llm.messages import Response

if TYPE_CHECKING:
    from keel.cache.vector_index import ScopeIndex

__all__ = ["SQLiteCacheBackend"]

logger = logging.getLogger("keel.cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    scope TEXT,
    vector BLOB,
    text TEXT,
    response TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    UNIQUE (namespace, key)
);
CREATE INDEX IF NOT EXISTS cache_entries_scope ON cache_entries (namespace, scope, id)
    WHERE scope IS NOT NULL;
CREATE INDEX IF NOT EXISTS cache_entries_expiry ON cache_entries (expires_at)
    WHERE expires_at IS NOT NULL;
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_MAGIC = b"KEELCIX1"
_HEADER = struct.Struct("<8sqq")  # magic, high-water id, dimension
_PURGE_EVERY = 256


class SQLiteCacheBackend(CacheBackend):
    """Cache entries in the SQLite file at ``path``; ``exact_below`` as in ``ScopeIndex``."""

    name = "sqlite"

    def __init__(self, path: Path | str, *, exact_below: int = 4096) -> None:
        self.path = Path(path)
        self.index_dir = self.path.with_name(self.path.name + ".index")
        self.exact_below = exact_below
        self._lock = threading.RLock()
        self._indexes: dict[tuple[str, str], ScopeIndex] = {}
        self._scope_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._puts = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise CacheError(f"cannot open the response cache {self.path}: {e}") from e
        self._closed = False

    # -- exact -----------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> CacheEntry | None:
        row = self._one(
            "SELECT key, response, text, created_at, expires_at FROM cache_entries "
            f"WHERE namespace = ? AND key = ? AND {_LIVE}",
            (namespace, key, time.time()),
        )
        return None if row is None else _entry(row)

    async def put(
        self, namespace: str, entry: CacheEntry, semantic: SemanticItem | None = None
    ) -> None:
        await self.put_many(namespace, [(entry, semantic)])

    async def put_many(
        self, namespace: str, items: Sequence[tuple[CacheEntry, SemanticItem | None]]
    ) -> None:
        from array import array

        rows = [
            (
                namespace,
                entry.key,
                None if semantic is None else semantic.scope,
                None if semantic is None else array("f", semantic.vector).tobytes(),
                entry.text,
                entry.response.model_dump_json(),
                entry.created_at,
                entry.expires_at,
            )
            for entry, semantic in items
        ]
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO cache_entries (namespace, key, scope, vector, text, "
                    "response, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._puts += len(rows)
                if self._puts >= _PURGE_EVERY:
                    self._puts = 0
                    self._db.execute(
                        "DELETE FROM cache_entries WHERE expires_at <= ?", (time.time(),)
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise CacheError(f"cannot write the response cache {self.path}: {e}") from e

    # -- semantic --------------------------------------------------------------------------

    async def nearest(
        self, namespace: str, scope: str, vector: Sequence[float], min_similarity: float
    ) -> SemanticMatch | None:
        from keel.cache.vector_index import as_matrix

        query = as_matrix([vector], len(vector))[0]
        # One catch-up per scope at a time; a big one (a rebuild) runs in a worker thread, so
        # the event loop (and exact lookups) go on meanwhile.
        async with self._scope_locks.setdefault((namespace, scope), asyncio.Lock()):
            index = await self._catch_up(namespace, scope, len(vector))
            if not len(index):
                return None
            with self._lock:
                self._check_open()
                for key, similarity in index.search(query, 8):
                    if similarity < min_similarity:
                        break
                    row = self._one(
                        "SELECT key, response, text, created_at, expires_at FROM cache_entries "
                        f"WHERE id = ? AND {_LIVE}",
                        (key, time.time()),
                    )
                    if row is None:
                        index.remove(key)  # replaced, expired or cleared: never served again
                        continue
                    return SemanticMatch(entry=_entry(row), similarity=similarity)
        return None

    async def _catch_up(self, namespace: str, scope: str, dimension: int) -> ScopeIndex:
        """The scope's index, with every row stored since its high-water id added."""
        import numpy as np

        from keel.cache.vector_index import ScopeIndex

        index = self._indexes.get((namespace, scope))
        if index is None:
            loaded = await asyncio.to_thread(self._load, namespace, scope, dimension)
            index = loaded or ScopeIndex(dimension, exact_below=self.exact_below)
            self._indexes[(namespace, scope)] = index
        if index.dimension != dimension:
            raise CacheError(
                f"query vector has {dimension} dimensions, the cached ones {index.dimension}",
                hint="the scope includes the embedder's name; use one embedder per dimension",
            )
        rows = self._all(
            "SELECT id, vector FROM cache_entries WHERE namespace = ? AND scope = ? AND id > ?",
            (namespace, scope, index.high_water),
        )
        if rows:
            blob = b"".join(bytes(r[1]) for r in rows)  # type: ignore[call-overload]
            matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dimension)
            ids = [int(str(r[0])) for r in rows]
            if len(rows) > 1000:
                await asyncio.to_thread(index.add, ids, matrix)
            else:
                index.add(ids, matrix)
        return index

    def _index_file(self, namespace: str, scope: str) -> Path:
        digest = hashlib.sha256(f"{namespace}\0{scope}".encode()).hexdigest()[:32]
        return self.index_dir / f"{digest}.usearch"

    def _load(self, namespace: str, scope: str, dimension: int) -> ScopeIndex | None:
        from usearch.index import Index

        from keel.cache.vector_index import ScopeIndex

        path = self._index_file(namespace, scope)
        try:
            data = path.read_bytes()
            magic, high_water, saved_dimension = _HEADER.unpack_from(data)
            restored = Index.restore(data[_HEADER.size :])
        except FileNotFoundError:
            return None
        except (OSError, struct.error, RuntimeError, ValueError) as e:
            logger.warning("cache index %s is unreadable (%s); rebuilding it", path, e)
            return None
        if magic != _MAGIC or saved_dimension != dimension or restored is None:
            logger.warning("cache index %s does not match; rebuilding it", path)
            return None
        index = ScopeIndex(dimension, exact_below=self.exact_below)
        index._index = restored
        index.high_water = high_water
        return index

    def _save_indexes(self) -> None:
        for (namespace, scope), index in self._indexes.items():
            if len(index) < self.exact_below:
                continue  # small indexes rebuild in milliseconds
            path = self._index_file(namespace, scope)
            payload = index._index.save()
            if payload is None:  # pragma: no cover - save() without a path returns bytes
                continue
            tmp = path.with_suffix(".tmp")
            try:
                self.index_dir.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(_HEADER.pack(_MAGIC, index.high_water, index.dimension) + payload)
                tmp.replace(path)
            except OSError as e:
                logger.warning("cannot save cache index %s: %s", path, e)

    # -- housekeeping ----------------------------------------------------------------------

    async def clear(self, namespace: str | None = None) -> int:
        with self._lock:
            self._check_open()
            try:
                if namespace is None:
                    cursor = self._db.execute("DELETE FROM cache_entries")
                else:
                    cursor = self._db.execute(
                        "DELETE FROM cache_entries WHERE namespace = ? "
                        "OR substr(namespace, 1, ?) = ?",
                        (namespace, len(namespace) + 1, namespace + "/"),
                    )
            except sqlite3.Error as e:
                raise CacheError(f"cannot clear the response cache {self.path}: {e}") from e
            for ns, scope in list(self._indexes):
                if in_namespace(ns, namespace):
                    del self._indexes[(ns, scope)]
                    self._index_file(ns, scope).unlink(missing_ok=True)
            return cursor.rowcount

    async def stats(self) -> CacheStats:
        rows = self._all(
            "SELECT namespace, COUNT(*), COUNT(scope) FROM cache_entries "
            f"WHERE {_LIVE} GROUP BY namespace ORDER BY namespace",
            (time.time(),),
        )
        namespaces = [
            NamespaceStats(namespace=r[0], entries=r[1], semantic_entries=r[2]) for r in rows
        ]
        return CacheStats(
            backend=self.name,
            location=str(self.path),
            entries=sum(n.entries for n in namespaces),
            semantic_entries=sum(n.semantic_entries for n in namespaces),
            namespaces=namespaces,
        )

    async def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._save_indexes()
            self._db.close()
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise CacheError(f"the response cache {self.path} is closed")

    def _one(self, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        with self._lock:
            self._check_open()
            try:
                row: tuple[object, ...] | None = self._db.execute(sql, args).fetchone()
            except sqlite3.Error as e:
                raise CacheError(f"cannot read the response cache {self.path}: {e}") from e
            return row

    def _all(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            self._check_open()
            try:
                rows: list[tuple[object, ...]] = self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise CacheError(f"cannot read the response cache {self.path}: {e}") from e
            return rows


def _entry(row: tuple[object, ...]) -> CacheEntry:
    key, response, text, created_at, expires_at = row
    return CacheEntry(
        key=str(key),
        response=Response.model_validate_json(str(response)),
        text=None if text is None else str(text),
        created_at=float(str(created_at)),
        expires_at=None if expires_at is None else float(str(expires_at)),
    )
