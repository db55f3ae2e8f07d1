"""What a memory file holds: namespaces, records, documents and cached embeddings.

Read straight from SQLite (read-only), so ``keel memory stats`` needs neither the embedding model
nor the vector index to answer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from keel.errors import StoreError

__all__ = ["MemoryStats", "NamespaceStats", "memory_stats"]


class NamespaceStats(BaseModel):
    """One namespace: its chunks (records) and the documents they came from."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    records: int
    documents: int


class MemoryStats(BaseModel):
    """One memory file: its size, vector dimension, namespaces and embedding cache."""

    model_config = ConfigDict(frozen=True)

    path: str
    size_bytes: int
    dimension: int | None
    namespaces: list[NamespaceStats]
    cached_embeddings: int


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def memory_stats(path: Path) -> MemoryStats:
    """Statistics of the memory file at ``path``; ``StoreError`` if there is none."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(
            f"no memory at {path} yet", hint="ingest documents first: keel ingest PATH"
        )
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open memory file {path}: {e}") from e
    try:
        tables = _tables(db)
        records: dict[str, int] = {}
        documents: dict[str, int] = {}
        dimension = None
        cached = 0
        if "vector_records" in tables:
            records = dict(
                db.execute("SELECT namespace, COUNT(*) FROM vector_records GROUP BY namespace")
            )
        if "vector_store_info" in tables:
            row = db.execute(
                "SELECT value FROM vector_store_info WHERE key = 'dimension'"
            ).fetchone()
            dimension = int(row[0]) if row else None
        if "documents" in tables:
            documents = dict(
                db.execute("SELECT namespace, COUNT(*) FROM documents GROUP BY namespace")
            )
        if "embedding_cache" in tables:
            cached = int(db.execute("SELECT COUNT(*) FROM embedding_cache").fetchone()[0])
    except sqlite3.Error as e:
        raise StoreError(f"cannot read memory file {path}: {e}") from e
    finally:
        db.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    return MemoryStats(
        path=str(path),
        size_bytes=size,
        dimension=dimension,
        namespaces=[
            NamespaceStats(namespace=ns, records=records.get(ns, 0), documents=documents.get(ns, 0))
            for ns in sorted(set(records) | set(documents))
        ],
        cached_embeddings=cached,
    )
