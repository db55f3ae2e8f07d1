"""The embedded vector store: one SQLite file holds the records, a faiss index beside it finds them.

SQLite (WAL) is the source of truth. Every write bumps the namespace's generation in the same
transaction; the faiss index of a namespace remembers the generation it reflects, and an index file
that is missing, corrupt or of another generation is rebuilt from SQLite. So a crash loses nothing
that was acknowledged, and a stale index is never served. Index files are written on ``close()``.

Keyword search (BM25) uses an SQLite FTS5 index over the same records, kept in step by triggers in
the same transactions, so hybrid retrieval needs no second store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.errors import MissingDependencyError, StoreError
from keel.memory.base import Hit, MetadataValue, VectorRecord, VectorStore

try:
    import numpy as np
    import numpy.typing as npt
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("numpy", "faiss", feature="the embedded vector index") from e

from keel.memory.faiss_index import IndexStamp, build_index, load_index, save_index, search

__all__ = ["SQLiteVectorStore"]

logger = logging.getLogger("keel.memory")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vector_store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vector_namespaces (
    namespace TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vector_records (
    key INTEGER PRIMARY KEY AUTOINCREMENT,  -- the faiss id; never reused
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,  -- float32, L2-normalised
    UNIQUE (namespace, id)
);
CREATE VIRTUAL TABLE IF NOT EXISTS vector_fts USING fts5(
    text, content='vector_records', content_rowid='key', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS vector_fts_insert AFTER INSERT ON vector_records BEGIN
    INSERT INTO vector_fts (rowid, text) VALUES (new.key, new.text);
END;
CREATE TRIGGER IF NOT EXISTS vector_fts_delete AFTER DELETE ON vector_records BEGIN
    INSERT INTO vector_fts (vector_fts, rowid, text) VALUES ('delete', old.key, old.text);
END;
CREATE TRIGGER IF NOT EXISTS vector_fts_update AFTER UPDATE OF text ON vector_records BEGIN
    INSERT INTO vector_fts (vector_fts, rowid, text) VALUES ('delete', old.key, old.text);
    INSERT INTO vector_fts (rowid, text) VALUES (new.key, new.text);
END;
"""
_WORD = re.compile(r"\w+")
_FloatArray = npt.NDArray[np.float32]


@dataclass
class _Index:
    """A namespace's faiss index, the generation of the SQLite state it reflects, and whether
    that state is newer than the index file."""

    faiss: Any
    generation: int
    dirty: bool


def _matches(metadata: Mapping[str, MetadataValue], where: Mapping[str, MetadataValue]) -> bool:
    """Exact match on every key of ``where``; a bool never equals a number."""
    for key, wanted in where.items():
        if key not in metadata:
            return False
        value = metadata[key]
        if isinstance(value, bool) != isinstance(wanted, bool) or value != wanted:
            return False
    return True


def fts_query(text: str) -> str | None:
    """An FTS5 query matching any word of ``text`` (BM25 ranks them), or None if it has none."""
    words = dict.fromkeys(word.lower() for word in _WORD.findall(text))
    return " OR ".join(f'"{word}"' for word in words) or None


class SQLiteVectorStore(VectorStore):
    """Vectors in one SQLite file, searched exactly by inner product with one faiss index per
    namespace (``IndexIDMap2(IndexFlatIP)`` over normalised vectors, i.e. cosine similarity),
    and by keywords with SQLite FTS5 (BM25)."""

    def __init__(self, path: Path, dimension: int) -> None:
        if dimension < 1:
            raise ValueError("dimension must be >= 1")
        self.path = Path(path)
        self.dimension = dimension
        self.index_dir = self.path.with_name(self.path.name + ".faiss")
        self._lock = threading.Lock()
        self._indexes: dict[str, _Index] = {}
        self._db: sqlite3.Connection | None = None
        self._store_id = b""
        self._open()

    # -- the protocol -------------------------------------------------------------------------

    async def upsert(self, namespace: str, records: Sequence[VectorRecord]) -> None:
        if records:
            await asyncio.to_thread(self._upsert, namespace, list(records))

    async def delete(self, namespace: str, ids: Sequence[str]) -> None:
        if ids:
            await asyncio.to_thread(self._delete, namespace, list(ids))

    async def query(
        self,
        namespace: str,
        vector: Sequence[float],
        k: int,
        where: Mapping[str, MetadataValue] | None = None,
    ) -> list[Hit]:
        if k < 1:
            raise ValueError("k must be >= 1")
        query = self._normalised([list(vector)], ["the query"])
        return await asyncio.to_thread(self._query, namespace, query, k, dict(where or {}))

    async def keyword_query(
        self,
        namespace: str,
        text: str,
        k: int,
        where: Mapping[str, MetadataValue] | None = None,
    ) -> list[Hit]:
        """BM25 ranking of the namespace's records against the words of ``text``; the score is
        the BM25 relevance (higher is better)."""
        if k < 1:
            raise ValueError("k must be >= 1")
        match = fts_query(text)
        if match is None:
            return []
        return await asyncio.to_thread(self._keyword, namespace, match, k, dict(where or {}))

    async def count(self, namespace: str) -> int:
        return await asyncio.to_thread(self._count, namespace)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    # -- opening and closing ------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open vector store {self.path}: {e}") from e
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            had_fts = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'vector_fts'").fetchone()
            db.executescript(_SCHEMA)
            if not had_fts:  # a store written before keyword search existed
                db.execute("INSERT INTO vector_fts (vector_fts) VALUES ('rebuild')")
            with self._transaction(db, immediate=True):
                db.execute(
                    "INSERT OR IGNORE INTO vector_store_info VALUES ('dimension', ?), ('id', ?)",
                    (str(self.dimension), uuid.uuid4().hex),
                )
                info = dict(db.execute("SELECT key, value FROM vector_store_info").fetchall())
        except sqlite3.Error as e:
            db.close()
            raise StoreError(f"cannot open vector store {self.path}: {e}") from e
        if int(info["dimension"]) != self.dimension:
            db.close()
            raise StoreError(
                f"vector store {self.path} holds vectors of dimension {info['dimension']}, "
                f"not {self.dimension}",
                hint="use the embedding model it was built with, or a new store file",
            )
        self._store_id = bytes.fromhex(info["id"])
        self._db = db

    def _close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            for namespace, index in self._indexes.items():
                if index.dirty:
                    stamp = IndexStamp(self._store_id, index.generation, int(index.faiss.ntotal))
                    save_index(self._index_path(namespace), index.faiss, stamp)
            self._indexes.clear()
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"vector store {self.path} is closed")
        return self._db

    @contextmanager
    def _transaction(self, db: sqlite3.Connection, *, immediate: bool) -> Iterator[None]:
        """A write (``immediate``) or read-snapshot transaction; rolled back on any error."""
        db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- writes -------------------------------------------------------------------------------

    def _normalised(self, vectors: list[list[float]], names: list[str]) -> _FloatArray:
        for vector, name in zip(vectors, names, strict=True):
            if len(vector) != self.dimension:
                raise StoreError(
                    f"{name} has a vector of dimension {len(vector)}, "
                    f"but the store holds dimension {self.dimension}"
                )
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), self.dimension)
        norms = np.linalg.norm(matrix, axis=1)
        for norm, name in zip(norms.tolist(), names, strict=True):
            if not norm > 0 or not np.isfinite(norm):
                raise StoreError(f"{name} has a zero or non-finite vector; cosine is undefined")
        normalised: _FloatArray = matrix / norms[:, None]
        return normalised

    def _upsert(self, namespace: str, records: list[VectorRecord]) -> None:
        latest = {record.id: record for record in records}  # the last of duplicate ids wins
        unique = list(latest.values())
        matrix = self._normalised([r.vector for r in unique], [f"record {r.id!r}" for r in unique])
        try:
            rows = [
                (namespace, r.id, r.text, json.dumps(r.metadata, sort_keys=True), vector.tobytes())
                for r, vector in zip(unique, matrix, strict=True)
            ]
        except ValueError as e:
            raise StoreError(f"metadata cannot be stored as JSON: {e}") from e
        with self._lock:
            db = self._conn()
            try:
                with self._transaction(db, immediate=True):
                    keys = [
                        db.execute(
                            "INSERT INTO vector_records (namespace, id, text, metadata, vector) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, id) DO UPDATE SET "
                            "text = excluded.text, metadata = excluded.metadata, "
                            "vector = excluded.vector RETURNING key",
                            row,
                        ).fetchone()[0]
                        for row in rows
                    ]
                    generation = self._bump(db, namespace)
            except sqlite3.Error as e:
                raise StoreError(f"cannot write to vector store {self.path}: {e}") from e
            ids = np.asarray(keys, dtype=np.int64)
            self._apply(namespace, generation, ids, (ids, matrix))

    def _delete(self, namespace: str, ids: list[str]) -> None:
        with self._lock:
            db = self._conn()
            try:
                with self._transaction(db, immediate=True):
                    keys = [
                        row[0]
                        for record_id in dict.fromkeys(ids)
                        for row in db.execute(
                            "DELETE FROM vector_records WHERE namespace = ? AND id = ? "
                            "RETURNING key",
                            (namespace, record_id),
                        ).fetchall()
                    ]
                    if not keys:
                        return
                    generation = self._bump(db, namespace)
            except sqlite3.Error as e:
                raise StoreError(f"cannot write to vector store {self.path}: {e}") from e
            self._apply(namespace, generation, np.asarray(keys, dtype=np.int64), None)

    @staticmethod
    def _bump(db: sqlite3.Connection, namespace: str) -> int:
        row = db.execute(
            "INSERT INTO vector_namespaces VALUES (?, 1) ON CONFLICT (namespace) "
            "DO UPDATE SET generation = generation + 1 RETURNING generation",
            (namespace,),
        ).fetchone()
        return int(row[0])

    def _apply(
        self,
        namespace: str,
        generation: int,
        remove: npt.NDArray[np.int64],
        add: tuple[npt.NDArray[np.int64], _FloatArray] | None,
    ) -> None:
        """Bring a loaded index from ``generation - 1`` to ``generation`` after a commit."""
        index = self._indexes.get(namespace)
        if index is None:
            return  # loaded (or rebuilt) on the next query
        if index.generation != generation - 1:
            del self._indexes[namespace]  # another process wrote in between
            return
        try:
            index.faiss.remove_ids(remove)
            if add is not None:
                index.faiss.add_with_ids(add[1], add[0])
        except RuntimeError:
            logger.warning("faiss update failed for namespace %r; it will be rebuilt", namespace)
            del self._indexes[namespace]
            return
        index.generation = generation
        index.dirty = True

    # -- reads --------------------------------------------------------------------------------

    def _count(self, namespace: str) -> int:
        with self._lock:
            db = self._conn()
            try:
                row = db.execute(
                    "SELECT COUNT(*) FROM vector_records WHERE namespace = ?", (namespace,)
                ).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read vector store {self.path}: {e}") from e
            return int(row[0])

    def _keyword(
        self, namespace: str, match: str, k: int, where: dict[str, MetadataValue]
    ) -> list[Hit]:
        sql = (
            "SELECT r.id, r.text, r.metadata, -bm25(vector_fts) FROM vector_fts "
            "JOIN vector_records AS r ON r.key = vector_fts.rowid "
            "WHERE vector_fts MATCH ? AND r.namespace = ? ORDER BY bm25(vector_fts)"
        )
        params: list[object] = [match, namespace]
        if not where:
            sql += " LIMIT ?"
            params.append(k)
        hits: list[Hit] = []
        with self._lock:
            db = self._conn()
            try:
                for record_id, text, metadata, score in db.execute(sql, params):
                    meta = json.loads(metadata)
                    if where and not _matches(meta, where):
                        continue
                    hits.append(Hit(id=record_id, score=score, text=text, metadata=meta))
                    if len(hits) == k:
                        break
            except sqlite3.Error as e:
                raise StoreError(f"cannot search vector store {self.path}: {e}") from e
        return hits

    def _query(
        self, namespace: str, query: _FloatArray, k: int, where: dict[str, MetadataValue]
    ) -> list[Hit]:
        with self._lock:
            db = self._conn()
            try:
                with self._transaction(db, immediate=False):  # one consistent snapshot
                    return self._search(db, namespace, query, k, where)
            except sqlite3.Error as e:
                raise StoreError(f"cannot read vector store {self.path}: {e}") from e

    def _search(
        self,
        db: sqlite3.Connection,
        namespace: str,
        query: _FloatArray,
        k: int,
        where: dict[str, MetadataValue],
    ) -> list[Hit]:
        row = db.execute(
            "SELECT generation FROM vector_namespaces WHERE namespace = ?", (namespace,)
        ).fetchone()
        if row is None:
            return []
        index = self._current_index(db, namespace, int(row[0]))
        allowed = None
        if where:
            # Exact filtering: search only among the records whose metadata matches.
            allowed = np.asarray(
                [
                    key
                    for key, metadata in db.execute(
                        "SELECT key, metadata FROM vector_records WHERE namespace = ?",
                        (namespace,),
                    )
                    if _matches(json.loads(metadata), where)
                ],
                dtype=np.int64,
            )
            if allowed.size == 0:
                return []
        ranked = search(index, query, k, allowed)
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = {
            key: (record_id, text, metadata)
            for key, record_id, text, metadata in db.execute(
                f"SELECT key, id, text, metadata FROM vector_records WHERE key IN ({marks})",
                [key for key, _ in ranked],
            )
        }
        hits = []
        for key, score in ranked:
            if key not in rows:  # cannot happen while generations agree; never serve a ghost
                raise StoreError(f"faiss index of namespace {namespace!r} is out of step")
            record_id, text, metadata = rows[key]
            hits.append(Hit(id=record_id, score=score, text=text, metadata=json.loads(metadata)))
        return hits

    # -- the faiss index ----------------------------------------------------------------------

    def _current_index(self, db: sqlite3.Connection, namespace: str, generation: int) -> Any:
        """The namespace's index at ``generation``: in memory, from its file, or rebuilt."""
        index = self._indexes.get(namespace)
        if index is not None and index.generation == generation:
            return index.faiss
        count = int(
            db.execute(
                "SELECT COUNT(*) FROM vector_records WHERE namespace = ?", (namespace,)
            ).fetchone()[0]
        )
        stamp = IndexStamp(self._store_id, generation, count)
        loaded = load_index(self._index_path(namespace), stamp, self.dimension)
        if loaded is not None:
            self._indexes[namespace] = _Index(loaded, generation, dirty=False)
            return loaded
        rebuilt = self._rebuild(db, namespace)
        self._indexes[namespace] = _Index(rebuilt, generation, dirty=True)
        return rebuilt

    def _index_path(self, namespace: str) -> Path:
        digest = hashlib.sha256(namespace.encode()).hexdigest()[:32]
        return self.index_dir / f"{digest}.index"

    def _rebuild(self, db: sqlite3.Connection, namespace: str) -> Any:
        rows = db.execute(
            "SELECT key, vector FROM vector_records WHERE namespace = ?", (namespace,)
        ).fetchall()
        keys = np.fromiter((key for key, _ in rows), dtype=np.int64, count=len(rows))
        try:
            matrix = np.frombuffer(b"".join(v for _, v in rows), dtype=np.float32)
            matrix = matrix.reshape(len(rows), self.dimension)
        except ValueError as e:
            raise StoreError(f"vector store {self.path} holds a malformed vector") from e
        return build_index(self.dimension, keys, matrix)
