"""The SQLite + faiss store: the conformance suite, plus its own crash and staleness guarantees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from vector_store_conformance import DIM, OpenStore, VectorStoreConformance, record, vec

from keel.errors import StoreError
from keel.memory.sqlite_store import SQLiteVectorStore


class TestSQLiteVectorStore(VectorStoreConformance):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda: SQLiteVectorStore(tmp_path / "memory.db", DIM)


def index_files(db: Path) -> list[Path]:
    return sorted(db.with_name(db.name + ".faiss").glob("*.index"))


async def fill(db: Path) -> None:
    """Leaves ``db`` with records a, b, c in namespace "ns" and a written index file."""
    store = SQLiteVectorStore(db, DIM)
    await store.upsert("ns", [record("a", vec(1.0)), record("b", vec(0.0, 1.0))])
    await store.upsert("ns", [record("c", vec(0.0, 0.0, 1.0))])
    assert [h.id for h in await store.query("ns", vec(1.0), k=1)] == ["a"]
    await store.close()


async def test_the_index_is_written_beside_the_database(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    await fill(db)
    (index,) = index_files(db)
    assert index.read_bytes().startswith(b"KEELIDX1")


async def test_a_deleted_index_is_rebuilt(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    await fill(db)
    shutil.rmtree(db.with_name(db.name + ".faiss"))
    store = SQLiteVectorStore(db, DIM)
    hits = await store.query("ns", vec(0.0, 0.0, 1.0), k=3)
    assert hits[0].id == "c"
    assert {h.id for h in hits} == {"a", "b", "c"}
    await store.close()
    assert len(index_files(db)) == 1  # and written again


@pytest.mark.parametrize("damage", ["garbage", "flipped byte", "truncated", "empty"])
async def test_a_corrupt_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "memory.db"
    await fill(db)
    (index,) = index_files(db)
    data = bytearray(index.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not a faiss index at all" * 10)
    elif damage == "flipped byte":
        data[-10] ^= 0xFF
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    index.write_bytes(bytes(data))

    store = SQLiteVectorStore(db, DIM)
    assert [h.id for h in await store.query("ns", vec(0.0, 1.0), k=1)] == ["b"]
    assert await store.count("ns") == 3
    await store.close()
    assert index.read_bytes().startswith(b"KEELIDX1")


async def test_an_index_of_an_older_generation_is_never_served(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    await fill(db)
    (index,) = index_files(db)
    old_index = index.read_bytes()  # holds a, b, c

    store = SQLiteVectorStore(db, DIM)
    await store.delete("ns", ["a"])
    await store.upsert("ns", [record("d", vec(1.0, 0.1))])
    await store.close()
    index.write_bytes(old_index)  # as if the newer index file had never been written

    store = SQLiteVectorStore(db, DIM)
    hits = await store.query("ns", vec(1.0), k=4)
    assert hits[0].id == "d"
    assert {h.id for h in hits} == {"b", "c", "d"}
    await store.close()


async def test_acknowledged_writes_survive_without_close(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    crashed = SQLiteVectorStore(db, DIM)
    await crashed.upsert("ns", [record("a", vec(1.0))])
    assert [h.id for h in await crashed.query("ns", vec(1.0), k=1)] == ["a"]
    await crashed.upsert("ns", [record("b", vec(0.0, 1.0))])
    # No close(): the index file was never written; a new process must still see everything.
    fresh = SQLiteVectorStore(db, DIM)
    assert {h.id for h in await fresh.query("ns", vec(1.0), k=5)} == {"a", "b"}
    await fresh.close()
    await crashed.close()


async def test_writes_by_another_instance_are_seen(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    reader = SQLiteVectorStore(db, DIM)
    writer = SQLiteVectorStore(db, DIM)
    await writer.upsert("ns", [record("a", vec(1.0))])
    assert [h.id for h in await reader.query("ns", vec(1.0), k=5)] == ["a"]  # index loaded
    await writer.upsert("ns", [record("b", vec(0.9, 0.1))])
    await writer.delete("ns", ["a"])
    assert [h.id for h in await reader.query("ns", vec(1.0), k=5)] == ["b"]
    await reader.upsert("ns", [record("c", vec(0.0, 1.0))])
    assert {h.id for h in await writer.query("ns", vec(1.0), k=5)} == {"b", "c"}
    await writer.close()
    await reader.close()


async def test_reopening_with_another_dimension_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    await fill(db)
    with pytest.raises(StoreError, match=f"dimension {DIM}"):
        SQLiteVectorStore(db, DIM * 2)


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteVectorStore(db, DIM)


async def test_an_index_from_another_database_file_is_not_trusted(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    await fill(db)
    (index,) = index_files(db)
    foreign = index.read_bytes()
    db.unlink()
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    store = SQLiteVectorStore(db, DIM)  # a new database: same namespace, same generations
    await store.upsert("ns", [record("x", vec(0, 0, 0, 1.0)), record("y", vec(0, 0, 0, 0, 1.0))])
    await store.upsert("ns", [record("z", vec(0, 0, 0, 0, 0, 1.0))])
    await store.close()
    index.write_bytes(foreign)
    store = SQLiteVectorStore(db, DIM)
    hits = await store.query("ns", vec(0, 0, 0, 1.0), k=5)
    assert hits[0].id == "x"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    await store.close()
