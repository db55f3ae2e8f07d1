"""The embedded vector store: one SQLite file holds the records, an HNSW index beside it finds them.

Each distinct vector of a namespace is stored once (``vector_data``, keyed by its SHA-256) and is
one node of the namespace's HNSW graph; records (``vector_records``: id, text, metadata) point at
their vector. Corpora repeat themselves (28% of a man-page corpus's chunks are exact duplicates,
one vector 1,724 times), and a graph full of equal vectors loses recall; so a search finds the
nearest distinct vectors and expands each to the records carrying it (equal scores, lowest key
first, at most ``k`` records). Hits are read from ``vector_records`` alone, without the blobs.

SQLite (WAL) is the source of truth. Every write bumps the namespace's generation in the same
transaction and stamps the vectors it added with it (vectors no record uses any more are deleted
and logged with theirs). The usearch HNSW index of a namespace remembers the generation it
reflects; at load, an index file that is intact but older is caught up by replaying the vectors
added and deleted in the later generations, and one that is missing or corrupt is rebuilt. So a
crash loses nothing that was acknowledged, costs a replay rather than a rebuild, and a stale index
is never served. Index files are written on ``close()`` and after every ``save_every`` changes.

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

from keel.errors import MissingDependencyError, StoreError
from keel.memory.base import Hit, MetadataValue, VectorRecord, VectorStore
from keel.memory.metadata_filter import matches, matching_keys

try:
    import numpy as np
    import numpy.typing as npt
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("numpy", "ann", feature="the embedded vector index") from e

from keel.memory.ann_index import (
    HNSWParams,
    Index,
    IndexStamp,
    load_index,
    new_index,
    replace_vectors,
    save_index,
    search,
    search_among,
)

__all__ = ["HNSWParams", "SQLiteVectorStore", "fts_query"]

logger = logging.getLogger("keel.memory")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vector_store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vector_namespaces (
    namespace TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vector_data (
    vkey INTEGER PRIMARY KEY AUTOINCREMENT,  -- the HNSW key; never reused
    namespace TEXT NOT NULL,
    hash BLOB NOT NULL,  -- SHA-256 of the vector's bytes
    vector BLOB NOT NULL,  -- float32, L2-normalised; read only to build or catch up the index
    gen INTEGER NOT NULL,  -- the namespace generation that added it (a vector never changes)
    UNIQUE (namespace, hash)
);
CREATE INDEX IF NOT EXISTS vector_data_gen ON vector_data (namespace, gen);
CREATE TABLE IF NOT EXISTS vector_records (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vkey INTEGER NOT NULL,  -- its vector in vector_data
    UNIQUE (namespace, id)
);
CREATE TABLE IF NOT EXISTS vector_deletions (  -- vectors deleted since the last index save
    namespace TEXT NOT NULL,
    key INTEGER NOT NULL,  -- a vkey
    generation INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
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
_VKEY_INDEX = "CREATE INDEX IF NOT EXISTS vector_records_vkey ON vector_records (vkey)"
_WORD = re.compile(r"\w+")
_FloatArray = npt.NDArray[np.float32]
_KeyArray = npt.NDArray[np.uint64]
_HYDRATE: dict[int, str] = {}  # the SELECT of n rows by key, by n
_EXPAND: dict[int, str] = {}  # the SELECT of up to k rows of each of n vectors, by n
_ARMS = 64  # vectors per expanding SELECT (SQLite allows 500 terms in a compound SELECT)
_NO_MATCH = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.float32))

EXACT_FILTER_LIMIT = 2048
"""A filtered query whose matching records are at most this many is answered exactly over them;
above, the HNSW search over-fetches until ``k`` matches are found (bench/ann.py measured both)."""


PARALLEL_BUILD_ABOVE = 10_000
"""A rebuilt graph of more vectors than this is built on every core, else on one thread."""


@dataclass
class _Index:
    """A namespace's HNSW index and the SQLite state it reflects: the generation, the connection's
    ``data_version`` when that generation was last checked, and rows changed since the last save."""

    hnsw: Index
    generation: int
    version: int
    unsaved: int


def _hit(row: tuple[int, str, str, str], score: float) -> Hit:
    """A hit from a (key or vkey, id, text, metadata) row."""
    metadata = row[3]
    return Hit(
        id=row[1],
        score=score,
        text=row[2],
        metadata={} if metadata == "{}" else json.loads(metadata),
    )


def fts_query(text: str) -> str | None:
    """An FTS5 query matching any word of ``text`` (BM25 ranks them), or None if it has none."""
    words = dict.fromkeys(word.lower() for word in _WORD.findall(text))
    return " OR ".join(f'"{word}"' for word in words) or None


class SQLiteVectorStore(VectorStore):
    """Vectors in one SQLite file, searched by cosine similarity with one usearch HNSW index per
    namespace (inner product over normalised float32 vectors), and by keywords with SQLite FTS5
    (BM25). ``hnsw`` sets the graph's parameters; ``save_every`` how many changed rows of a
    namespace trigger an index save before ``close()`` (bounding the replay after a crash)."""

    def __init__(
        self,
        path: Path,
        dimension: int,
        *,
        hnsw: HNSWParams | None = None,
        save_every: int = 20_000,
    ) -> None:
        if dimension < 1:
            raise ValueError("dimension must be >= 1")
        self.path = Path(path)
        self.dimension = dimension
        self.hnsw = hnsw or HNSWParams()
        self.save_every = save_every
        self.index_dir = self.path.with_name(self.path.name + ".hnsw")
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
        query = self._query_vector(vector)
        # A search of a loaded, current index takes a fraction of a millisecond: less than
        # handing it to a worker thread would. Anything slower (a load, a catch-up, a filtered
        # scan), or a store busy with a write, goes to a thread.
        if not where and self._lock.acquire(blocking=False):
            try:
                hits = self._search_loaded(namespace, query, k)
            finally:
                self._lock.release()
            if hits is not None:
                return hits
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
            db.execute("PRAGMA mmap_size = 1073741824")  # reads without a syscall per page
            had_fts = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'vector_fts'").fetchone()
            db.executescript(_SCHEMA)
            if not had_fts:  # a store written before keyword search existed
                db.execute("INSERT INTO vector_fts (vector_fts) VALUES ('rebuild')")
            with self._transaction(db, immediate=True):
                columns = {row[1] for row in db.execute("PRAGMA table_info(vector_records)")}
                if "vector" in columns:  # a store written before vectors were deduplicated
                    self._migrate(db, columns)
                db.execute(_VKEY_INDEX)
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

    @staticmethod
    def _migrate(db: sqlite3.Connection, columns: set[str]) -> None:
        """Moves the vectors of a store written by an earlier version out of its records, one row
        per distinct vector, and gives the store a new id so that its old index files (keyed by
        record) are rebuilt."""
        db.execute("ALTER TABLE vector_records ADD COLUMN vkey INTEGER")
        moved = db.execute("SELECT key, namespace, vector FROM vector_records").fetchall()
        for key, namespace, vector in moved:
            (vkey,) = db.execute(
                "INSERT INTO vector_data (namespace, hash, vector, gen) VALUES (?, ?, ?, 0) "
                "ON CONFLICT (namespace, hash) DO UPDATE SET gen = gen RETURNING vkey",
                (namespace, hashlib.sha256(vector).digest(), vector),
            ).fetchone()
            db.execute("UPDATE vector_records SET vkey = ? WHERE key = ?", (vkey, key))
        db.execute("DROP INDEX IF EXISTS vector_records_gen")
        db.execute("ALTER TABLE vector_records DROP COLUMN vector")
        if "gen" in columns:
            db.execute("ALTER TABLE vector_records DROP COLUMN gen")
        db.execute("DELETE FROM vector_deletions")
        db.execute("UPDATE vector_namespaces SET generation = 0")
        db.execute("DELETE FROM vector_store_info WHERE key = 'id'")
        logger.info("moved %d vectors into the deduplicated layout", len(moved))

    def _close(self) -> None:
        with self._lock:
            if self._db is None:
                return
            for namespace, index in self._indexes.items():
                if index.unsaved:
                    self._save(self._db, namespace, index)
            self._indexes.clear()
            self._db.close()
            self._db = None

    def _save(self, db: sqlite3.Connection, namespace: str, index: _Index) -> None:
        """Writes the index file, then forgets the deletions it already reflects."""
        stamp = IndexStamp(self._store_id, index.generation, len(index.hnsw))
        if not save_index(self._index_path(namespace), index.hnsw, stamp):
            return
        index.unsaved = 0
        try:
            db.execute(
                "DELETE FROM vector_deletions WHERE namespace = ? AND generation <= ?",
                (namespace, index.generation),
            )
        except sqlite3.Error as e:  # only a smaller log was lost: the next save retries
            logger.warning("cannot prune the deletion log of %s: %s", self.path, e)

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

    def _query_vector(self, vector: Sequence[float]) -> _FloatArray:
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (self.dimension,):
            size = query.size if query.ndim == 1 else query.shape
            raise StoreError(
                f"the query has a vector of dimension {size}, "
                f"but the store holds dimension {self.dimension}"
            )
        norm = float(np.sqrt(query @ query))
        if not norm > 0 or norm == float("inf") or norm != norm:
            raise StoreError("the query has a zero or non-finite vector; cosine is undefined")
        normalised: _FloatArray = query / np.float32(norm)
        return normalised

    def _upsert(self, namespace: str, records: list[VectorRecord]) -> None:
        latest = {record.id: record for record in records}  # the last of duplicate ids wins
        unique = list(latest.values())
        matrix = self._normalised([r.vector for r in unique], [f"record {r.id!r}" for r in unique])
        try:
            metadata = [json.dumps(r.metadata, sort_keys=True) for r in unique]
        except ValueError as e:
            raise StoreError(f"metadata cannot be stored as JSON: {e}") from e
        blobs = [vector.tobytes() for vector in matrix]
        with self._lock:
            db = self._conn()
            added: dict[int, int] = {}  # vkey of a vector new in this generation -> its row
            replaced: set[int] = set()  # vkeys records pointed at before
            try:
                with self._transaction(db, immediate=True):
                    generation = self._bump(db, namespace)
                    written = zip(unique, metadata, blobs, strict=True)
                    for row, (r, meta, blob) in enumerate(written):
                        vkey, gen = db.execute(
                            "INSERT INTO vector_data (namespace, hash, vector, gen) "
                            "VALUES (?, ?, ?, ?) ON CONFLICT (namespace, hash) "
                            "DO UPDATE SET gen = gen RETURNING vkey, gen",
                            (namespace, hashlib.sha256(blob).digest(), blob, generation),
                        ).fetchone()
                        if gen == generation:
                            added.setdefault(vkey, row)
                        old = db.execute(
                            "SELECT vkey FROM vector_records WHERE namespace = ? AND id = ?",
                            (namespace, r.id),
                        ).fetchone()
                        if old is not None and old[0] != vkey:
                            replaced.add(old[0])
                        db.execute(
                            "INSERT INTO vector_records (namespace, id, text, metadata, vkey) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, id) DO UPDATE "
                            "SET text = excluded.text, metadata = excluded.metadata, "
                            "vkey = excluded.vkey",
                            (namespace, r.id, r.text, meta, vkey),
                        )
                    removed = self._drop_unused(db, namespace, replaced, generation)
            except sqlite3.Error as e:
                raise StoreError(f"cannot write to vector store {self.path}: {e}") from e
            rows = list(added.values())
            self._apply(
                db,
                namespace,
                generation,
                removed,
                np.asarray(list(added), dtype=np.uint64),
                matrix[rows] if rows else None,
            )

    def _delete(self, namespace: str, ids: list[str]) -> None:
        with self._lock:
            db = self._conn()
            try:
                with self._transaction(db, immediate=True):
                    vkeys = {
                        row[0]
                        for record_id in dict.fromkeys(ids)
                        for row in db.execute(
                            "DELETE FROM vector_records WHERE namespace = ? AND id = ? "
                            "RETURNING vkey",
                            (namespace, record_id),
                        ).fetchall()
                    }
                    if not vkeys:
                        return
                    generation = self._bump(db, namespace)
                    removed = self._drop_unused(db, namespace, vkeys, generation)
            except sqlite3.Error as e:
                raise StoreError(f"cannot write to vector store {self.path}: {e}") from e
            self._apply(db, namespace, generation, removed, _NO_MATCH[0], None)

    @staticmethod
    def _drop_unused(
        db: sqlite3.Connection, namespace: str, vkeys: set[int], generation: int
    ) -> _KeyArray:
        """Deletes the vectors among ``vkeys`` that no record uses any more, logging them."""
        unused = [
            vkey
            for vkey in sorted(vkeys)
            if db.execute("SELECT 1 FROM vector_records WHERE vkey = ? LIMIT 1", (vkey,)).fetchone()
            is None
        ]
        db.executemany("DELETE FROM vector_data WHERE vkey = ?", [(vkey,) for vkey in unused])
        db.executemany(
            "INSERT OR REPLACE INTO vector_deletions VALUES (?, ?, ?)",
            [(namespace, vkey, generation) for vkey in unused],
        )
        return np.asarray(unused, dtype=np.uint64)

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
        db: sqlite3.Connection,
        namespace: str,
        generation: int,
        removed: _KeyArray,
        added: _KeyArray,
        vectors: _FloatArray | None,
    ) -> None:
        """Bring a loaded index from ``generation - 1`` to ``generation`` after a commit: remove
        the ``removed`` vectors and add the ``added`` ones."""
        index = self._indexes.get(namespace)
        if index is None:
            return  # loaded (and caught up) on the next query
        if index.generation != generation - 1:
            return  # another process wrote in between: the next query catches up
        try:
            if len(removed):
                index.hnsw.remove(removed)
            replace_vectors(index.hnsw, added, vectors)
        except (RuntimeError, ValueError) as e:
            logger.warning("HNSW update of namespace %r failed (%s); rebuilding", namespace, e)
            del self._indexes[namespace]
            return
        index.generation = generation
        index.unsaved += max(1, len(removed) + len(added))
        if index.unsaved >= self.save_every:
            self._save(db, namespace, index)

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
                    if where and not matches(meta, where):
                        continue
                    hits.append(Hit(id=record_id, score=score, text=text, metadata=meta))
                    if len(hits) == k:
                        break
            except sqlite3.Error as e:
                raise StoreError(f"cannot search vector store {self.path}: {e}") from e
        return hits

    def _search_loaded(self, namespace: str, query: _FloatArray, k: int) -> list[Hit] | None:
        """The hits from the namespace's loaded index, if it is certainly current; else None.

        Current means no other connection committed since its generation was checked: SQLite's
        ``data_version`` is unchanged after the hydrating SELECT, so the index and the rows read
        agree (the consistent path handles anything else).
        """
        index = self._indexes.get(namespace)
        db = self._conn()
        if index is None:
            return None
        try:
            size = len(index.hnsw)
            vkeys, scores = search(index.hnsw, query, min(k, size)) if size else _NO_MATCH
            hits = self._expand(db, vkeys, scores, k)
            if db.execute("PRAGMA data_version").fetchone()[0] != index.version:
                return None
            return hits
        except sqlite3.Error as e:
            raise StoreError(f"cannot read vector store {self.path}: {e}") from e

    def _expand(
        self, db: sqlite3.Connection, vkeys: _KeyArray, scores: _FloatArray, k: int
    ) -> list[Hit] | None:
        """Up to ``k`` hits for the vectors ``vkeys`` (best first): the records carrying each, in
        key order; None if a vector has no record (the index is out of step).

        One statement per ``_ARMS`` vectors: a ``UNION ALL`` of one range of the vkey index per
        vector, which SQLite runs arm after arm, so reading stops (and the later arms never run)
        once ``k`` records are in. A vector carried by 1,724 records costs no more than one
        carried by ``k``.
        """
        order = vkeys.tolist()
        similarities = scores.tolist()
        hits: list[Hit] = []
        for start in range(0, len(order), _ARMS):
            part = order[start : start + _ARMS]
            sql = _EXPAND.get(len(part))
            if sql is None:
                arm = (
                    "SELECT * FROM (SELECT vkey, id, text, metadata FROM vector_records "
                    "WHERE vkey = ? ORDER BY key LIMIT ?)"
                )
                sql = _EXPAND.setdefault(len(part), " UNION ALL ".join([arm] * len(part)))
            at = -1  # the position in ``part`` of the vector whose records are being read
            cursor = db.execute(sql, [value for vkey in part for value in (vkey, k)])
            try:
                for row in cursor:
                    if at < 0 or row[0] != part[at]:  # the next vector: it must be part[at + 1]
                        at += 1
                        if at == len(part) or row[0] != part[at]:
                            return None
                    hits.append(_hit(row, similarities[start + at]))
                    if len(hits) == k:
                        return hits
            finally:
                cursor.close()  # ends the statement now: the later arms never run
            if at != len(part) - 1:  # every record was read: every vector must have had some
                return None
        return hits

    def _hydrate(
        self, db: sqlite3.Connection, keys: list[int], scores: list[float]
    ) -> list[Hit] | None:
        """Hits for the records ``keys`` in order, read in one SELECT; None if one is missing."""
        if not keys:
            return []
        sql = _HYDRATE.get(len(keys))
        if sql is None:
            sql = _HYDRATE.setdefault(
                len(keys),
                "SELECT key, id, text, metadata FROM vector_records "
                f"WHERE key IN ({','.join('?' * len(keys))})",
            )
        rows = {row[0]: row for row in db.execute(sql, keys)}
        hits = []
        for key, score in zip(keys, scores, strict=True):
            row = rows.get(key)
            if row is None:
                return None
            hits.append(_hit(row, score))
        return hits

    def _query(
        self, namespace: str, query: _FloatArray, k: int, where: dict[str, MetadataValue]
    ) -> list[Hit]:
        with self._lock:
            db = self._conn()
            try:
                version = int(db.execute("PRAGMA data_version").fetchone()[0])
                with self._transaction(db, immediate=False):  # one consistent snapshot
                    return self._search(db, namespace, query, k, where, version)
            except sqlite3.Error as e:
                raise StoreError(f"cannot read vector store {self.path}: {e}") from e

    def _search(
        self,
        db: sqlite3.Connection,
        namespace: str,
        query: _FloatArray,
        k: int,
        where: dict[str, MetadataValue],
        version: int,
    ) -> list[Hit]:
        row = db.execute(
            "SELECT generation FROM vector_namespaces WHERE namespace = ?", (namespace,)
        ).fetchone()
        if row is None:
            return []
        index = self._current_index(db, namespace, int(row[0]))
        index.version = version
        size = len(index.hnsw)
        if not size:
            return []
        if where:
            # Exact over few matching vectors, else HNSW over-fetching until k of them turn up;
            # then the matching records of each, in key order.
            matching: dict[int, list[int]] = {}
            for key, vkey in matching_keys(db, namespace, where):
                matching.setdefault(vkey, []).append(key)
            allowed = np.fromiter(matching, dtype=np.uint64, count=len(matching))
            vkeys, scores = search_among(
                index.hnsw, query, k, allowed, exact_limit=EXACT_FILTER_LIMIT
            )
            keys: list[int] = []
            key_scores: list[float] = []
            for vkey, score in zip(vkeys.tolist(), scores.tolist(), strict=True):
                taken = sorted(matching[vkey])[: k - len(keys)]
                keys += taken
                key_scores += [score] * len(taken)
            hits = self._hydrate(db, keys, key_scores)
        else:
            vkeys, scores = search(index.hnsw, query, min(k, size))
            hits = self._expand(db, vkeys, scores, k)
        if hits is None:  # cannot happen while generations agree; never serve a ghost
            raise StoreError(f"HNSW index of namespace {namespace!r} is out of step")
        return hits

    # -- the HNSW index -----------------------------------------------------------------------

    def _current_index(self, db: sqlite3.Connection, namespace: str, generation: int) -> _Index:
        """The namespace's index at ``generation``: in memory, or from its file, caught up by
        replaying later writes; rebuilt from SQLite if neither is possible."""
        index = self._indexes.get(namespace)
        if index is not None and index.generation == generation:
            return index
        if index is None:
            loaded = load_index(
                self._index_path(namespace), self._store_id, self.dimension, self.hnsw
            )
            if loaded is not None:
                hnsw, stamp = loaded
                index = _Index(hnsw, stamp.generation, version=-1, unsaved=0)
        caught_up = (
            index is not None
            and index.generation <= generation
            and self._catch_up(db, namespace, index, generation)
        )
        if index is not None and caught_up:
            self._indexes[namespace] = index
            return index
        index = _Index(self._rebuild(db, namespace), generation, version=-1, unsaved=1)
        self._indexes[namespace] = index
        return index

    def _catch_up(
        self, db: sqlite3.Connection, namespace: str, index: _Index, generation: int
    ) -> bool:
        """Replays the rows and deletions of generations after the index's; False if the result
        does not hold exactly the namespace's records (a pruned deletion log, a foreign file)."""
        if index.generation < generation:
            rows = db.execute(
                "SELECT vkey, vector FROM vector_data WHERE namespace = ? AND gen > ?",
                (namespace, index.generation),
            ).fetchall()
            deleted = db.execute(
                "SELECT key FROM vector_deletions WHERE namespace = ? AND generation > ?",
                (namespace, index.generation),
            ).fetchall()
            if len(rows) > max(1000, len(index.hnsw)):
                return False  # most of it changed: a fresh graph is as cheap and better
            keys, matrix = self._unpack(rows)
            try:
                if deleted:
                    index.hnsw.remove(np.asarray([key for (key,) in deleted], dtype=np.uint64))
                replace_vectors(index.hnsw, keys, matrix)
            except (RuntimeError, ValueError) as e:
                logger.warning("cannot replay writes into the HNSW index (%s); rebuilding", e)
                return False
            logger.info(
                "caught up the HNSW index of namespace %r from generation %d to %d (%d rows)",
                namespace,
                index.generation,
                generation,
                len(rows) + len(deleted),
            )
            index.unsaved += len(rows) + len(deleted)
            index.generation = generation
        count = db.execute(
            "SELECT COUNT(*) FROM vector_data WHERE namespace = ?", (namespace,)
        ).fetchone()[0]
        return bool(len(index.hnsw) == count)

    def _index_path(self, namespace: str) -> Path:
        digest = hashlib.sha256(namespace.encode()).hexdigest()[:32]
        return self.index_dir / f"{digest}.usearch"

    def _unpack(self, rows: list[tuple[int, bytes]]) -> tuple[_KeyArray, _FloatArray]:
        keys = np.fromiter((key for key, _ in rows), dtype=np.uint64, count=len(rows))
        try:
            matrix = np.frombuffer(b"".join(v for _, v in rows), dtype=np.float32)
            return keys, matrix.reshape(len(rows), self.dimension)
        except ValueError as e:
            raise StoreError(f"vector store {self.path} holds a malformed vector") from e

    def _rebuild(self, db: sqlite3.Connection, namespace: str) -> Index:
        rows = db.execute(
            "SELECT vkey, vector FROM vector_data WHERE namespace = ?", (namespace,)
        ).fetchall()
        keys, matrix = self._unpack(rows)
        hnsw = new_index(self.dimension, self.hnsw)
        if len(keys):
            # usearch's parallel insertion leaves some nodes unreachable: measured with usearch
            # 2.26.6, 74 of 10,840 vectors (40 graphs of 271 random vectors) could not be found
            # by their own vector, none when inserted on one thread. Small graphs are built on
            # one thread (a fraction of a second); large ones in parallel.
            threads = 1 if len(keys) <= PARALLEL_BUILD_ABOVE else 0
            hnsw.add(keys, matrix, threads=threads)
        return hnsw
