"""The SQLite + usearch HNSW store: the conformance suite, plus its own crash and staleness
guarantees (a real kill of a writing process, replay of writes the index file missed)."""

from __future__ import annotations

import logging
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vector_store_conformance import DIM, OpenStore, VectorStoreConformance, record, vec

import keel.memory.sqlite_store as sqlite_store
from keel.errors import StoreError
from keel.memory.base import VectorRecord
from keel.memory.sqlite_store import SQLiteVectorStore


class TestSQLiteVectorStore(VectorStoreConformance):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenStore:
        return lambda: SQLiteVectorStore(tmp_path / "memory.db", DIM)


def index_files(db: Path) -> list[Path]:
    return sorted(db.with_name(db.name + ".hnsw").glob("*.usearch"))


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
    assert index.read_bytes().startswith(b"KEELHNS1")


async def test_a_deleted_index_is_rebuilt(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    await fill(db)
    shutil.rmtree(db.with_name(db.name + ".hnsw"))
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
        data = bytearray(b"not an index at all" * 10)
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
    assert index.read_bytes().startswith(b"KEELHNS1")


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


async def test_writes_after_the_last_saved_index_are_replayed_not_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "memory.db"
    await fill(db)  # index file saved with a, b, c
    crashed = SQLiteVectorStore(db, DIM)
    await crashed.upsert("ns", [record("d", vec(0, 0, 0, 1.0)), record("a", vec(0, 1.0, 0.1))])
    await crashed.delete("ns", ["b"])
    # No close(): the index file still holds a, b, c as they were.
    caplog.set_level(logging.INFO, logger="keel.memory")
    fresh = SQLiteVectorStore(db, DIM)
    hits = await fresh.query("ns", vec(0, 1.0), k=5)
    assert [h.id for h in hits][:1] == ["a"]  # a's new vector
    assert {h.id for h in hits} == {"a", "c", "d"}
    assert "caught up the HNSW index of namespace 'ns' from generation 2 to 4" in caplog.text
    await fresh.close()
    await crashed.close()


def random_records(n: int, seed: int = 7) -> list[VectorRecord]:
    rng = np.random.default_rng(seed)
    return [
        VectorRecord(
            id=f"r{i}", vector=rng.normal(size=DIM).tolist(), text=f"r{i}", metadata={"tag": i % 5}
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("exact_limit", [0, 10_000])  # HNSW over-fetching, exact over matches
async def test_filtered_queries_return_k_matching_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exact_limit: int
) -> None:
    monkeypatch.setattr(sqlite_store, "EXACT_FILTER_LIMIT", exact_limit)
    records = random_records(500)
    records.append(VectorRecord(id="rare", vector=vec(1.0), text="rare", metadata={"tag": 99}))
    store = SQLiteVectorStore(tmp_path / "memory.db", DIM)
    await store.upsert("ns", records)
    await store.upsert(
        "other", [VectorRecord(id="x", vector=vec(1.0), text="x", metadata={"tag": 3})]
    )
    query = np.random.default_rng(1).normal(size=DIM)
    hits = await store.query("ns", query.tolist(), k=10, where={"tag": 3})
    assert len(hits) == 10
    assert all(h.metadata["tag"] == 3 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    matching = [r for r in records if r.metadata.get("tag") == 3]
    unit = query / np.linalg.norm(query)
    exact = sorted(
        matching, key=lambda r: -float(np.dot(r.vector, unit) / np.linalg.norm(r.vector))
    )[:10]
    assert len({h.id for h in hits} & {r.id for r in exact}) >= 9
    rare = await store.query("ns", vec(-1.0), k=3, where={"tag": 99})
    assert [h.id for h in rare] == ["rare"]
    await store.close()


CHILD = """
import asyncio, sys
from pathlib import Path
import numpy as np
from keel.memory.base import VectorRecord
from keel.memory.sqlite_store import SQLiteVectorStore

def vector(n):
    return np.random.default_rng(n).normal(size=8).tolist()

async def main():
    store = SQLiteVectorStore(Path(sys.argv[1]), 8, save_every=int(sys.argv[2]))
    n = int(sys.argv[3])
    while True:
        batch = [VectorRecord(id=f"r{i}", vector=vector(i), text="t") for i in range(n, n + 5)]
        await store.upsert("ns", batch)
        await store.delete("ns", [f"r{n - 2}"])
        print(n, flush=True)  # acknowledged: r{n}..r{n+4} stored, r{n-2} deleted
        n += 5

asyncio.run(main())
"""


def vector_of(n: int) -> list[float]:
    return list(np.random.default_rng(n).normal(size=DIM).tolist())


def write_and_kill(db: Path) -> list[int]:
    """Runs writers that are killed (SIGKILL) mid-stream; returns the batches they acknowledged."""
    acknowledged: list[int] = []
    start = 0
    for save_every, writes in ((7, 30), (1, 12), (1000, 25)):  # kills land in saves, or not
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(save_every), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(writes):
            acknowledged.append(int(child.stdout.readline()))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        start = acknowledged[-1] + 5 + 100  # clear of whatever the child did after its last ack
    return acknowledged


async def test_a_kill_during_upserts_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    acknowledged = write_and_kill(db)
    live = {f"r{i}" for n in acknowledged for i in range(n, n + 5)}
    live -= {f"r{n - 2}" for n in acknowledged}
    store = SQLiteVectorStore(db, DIM)
    count = await store.count("ns")
    assert count >= len(live)  # writes after the last ack may have landed too
    for record_id in sorted(live):
        (hit,) = await store.query("ns", vector_of(int(record_id[1:])), k=1)
        assert hit.id == record_id
        assert hit.score == pytest.approx(1.0, abs=1e-5)
    found = {h.id for h in await store.query("ns", vec(1.0), k=count)}
    assert live <= found
    await store.close()


IMPORT_ORDER = """
import asyncio, sys
from pathlib import Path
from keel.memory.sqlite_store import SQLiteVectorStore

async def main():
    store = SQLiteVectorStore(Path(sys.argv[1]), 8)
    await store.upsert("ns", [])
    await store.close()

asyncio.run(main())
import keel.memory.onnx_embedder  # loads onnxruntime, after usearch was imported
print("ok")
"""


def test_the_store_then_the_local_embedder_can_be_imported(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="needs the embeddings extra")
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ORDER, str(tmp_path / "memory.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr  # -11 (SIGSEGV) without share_cxx_runtime
    assert done.stdout.strip() == "ok"


def table_count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def graph_size(store: SQLiteVectorStore, namespace: str = "ns") -> int:
    return len(store._indexes[namespace].hnsw)


async def test_equal_vectors_are_one_graph_node_expanded_to_their_records(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    store = SQLiteVectorStore(db, DIM)
    copies = [record(f"a{i}", vec(2.0 ** (i - 2))) for i in range(5)]  # equal once normalised
    await store.upsert("ns", [*copies, record("b", vec(0.9, 0.1)), record("c", vec(0.0, 1.0))])
    await store.upsert("other", [record("a9", vec(1.0))])  # namespaces never share vectors
    hits = await store.query("ns", vec(1.0), k=3)
    assert [h.id for h in hits] == ["a0", "a1", "a2"]  # ties: in the order they were stored
    assert [h.score for h in hits] == pytest.approx([1.0] * 3, abs=1e-5)
    hits = await store.query("ns", vec(1.0), k=10)
    assert [h.id for h in hits] == ["a0", "a1", "a2", "a3", "a4", "b", "c"]
    assert graph_size(store) == 3
    assert table_count(db, "vector_data") == 4

    await store.delete("ns", ["a0", "a1", "a2", "a3"])
    assert graph_size(store) == 3  # a4 still carries the vector
    assert [h.id for h in await store.query("ns", vec(1.0), k=2)] == ["a4", "b"]
    await store.upsert("ns", [record("a4", vec(0.0, 0.0, 1.0))])  # the last carrier moves away
    assert graph_size(store) == 3
    assert table_count(db, "vector_data") == 4
    assert [h.id for h in await store.query("ns", vec(1.0), k=1)] == ["b"]
    await store.upsert("ns", [record("c2", vec(0.0, 3.0))])  # an existing vector, a new record
    assert graph_size(store) == 3
    await store.close()

    store = SQLiteVectorStore(db, DIM)
    hits = await store.query("ns", vec(0.0, 1.0), k=3)
    assert [h.id for h in hits] == ["c", "c2", "b"]
    assert hits[0].score == hits[1].score
    assert [h.id for h in await store.query("other", vec(1.0), k=3)] == ["a9"]
    await store.close()
    with sqlite3.connect(db) as conn:  # hits are read from rows without the vector blobs
        columns = {row[1] for row in conn.execute("PRAGMA table_info(vector_records)")}
    assert "vector" not in columns


async def test_filtered_queries_expand_only_to_matching_records(tmp_path: Path) -> None:
    store = SQLiteVectorStore(tmp_path / "memory.db", DIM)
    await store.upsert("ns", [record(f"r{i}", vec(1.0), odd=i % 2 == 1) for i in range(20)])
    await store.upsert("ns", [record("near", vec(1.0, 0.1), odd=True)])
    hits = await store.query("ns", vec(1.0), k=12, where={"odd": True})
    assert [h.id for h in hits] == [*(f"r{i}" for i in range(1, 20, 2)), "near"]
    assert len({h.score for h in hits[:10]}) == 1
    await store.close()


async def test_replay_after_a_crash_keeps_shared_vectors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "memory.db"
    await fill(db)  # index file saved with a, b, c
    crashed = SQLiteVectorStore(db, DIM)
    await crashed.upsert(
        "ns",
        [record("a2", vec(1.0)), record("d", vec(0, 0, 0, 1.0)), record("d2", vec(0, 0, 0, 2))],
    )
    await crashed.delete("ns", ["a", "b"])  # a's vector lives on in a2; b's is gone
    caplog.set_level(logging.INFO, logger="keel.memory")
    fresh = SQLiteVectorStore(db, DIM)  # no close() of the writer: replayed from generation 2
    hits = await fresh.query("ns", vec(1.0, 0.0, 0.0, 0.5), k=5)
    assert [h.id for h in hits] == ["a2", "d", "d2", "c"]
    assert "caught up the HNSW index of namespace 'ns' from generation 2 to 4" in caplog.text
    assert graph_size(fresh) == 3
    await fresh.close()
    await crashed.close()


OLD_LAYOUT = """
CREATE TABLE vector_store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE vector_namespaces (namespace TEXT PRIMARY KEY, generation INTEGER NOT NULL);
CREATE TABLE vector_records (
    key INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, id TEXT NOT NULL,
    text TEXT NOT NULL, metadata TEXT NOT NULL, vector BLOB NOT NULL,
    gen INTEGER NOT NULL DEFAULT 0, UNIQUE (namespace, id)
);
CREATE INDEX vector_records_gen ON vector_records (namespace, gen);
CREATE TABLE vector_deletions (
    namespace TEXT NOT NULL, key INTEGER NOT NULL, generation INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE vector_fts USING fts5(
    text, content='vector_records', content_rowid='key', tokenize='porter unicode61'
);
CREATE TRIGGER vector_fts_insert AFTER INSERT ON vector_records BEGIN
    INSERT INTO vector_fts (rowid, text) VALUES (new.key, new.text);
END;
INSERT INTO vector_store_info VALUES ('dimension', '8'), ('id', '00112233445566778899aabbccddeeff');
INSERT INTO vector_namespaces VALUES ('ns', 3);
"""


async def test_a_store_of_the_previous_layout_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_LAYOUT)
        for i, (text, v) in enumerate([("one", vec(1.0)), ("two", vec(1.0)), ("x", vec(0, 1.0))]):
            blob = np.asarray(v, dtype=np.float32).tobytes()
            conn.execute(
                "INSERT INTO vector_records VALUES (NULL, 'ns', ?, ?, '{}', ?, 3)",
                (f"r{i}", text, blob),
            )
    store = SQLiteVectorStore(db, DIM)
    await store.upsert("ns", [record("a", vec(1.0)), record("b", vec(0.0, 0.0, 1.0))])
    hits = await store.query("ns", vec(1.0), k=3)
    assert [h.id for h in hits] == ["r0", "r1", "a"]
    assert [h.score for h in hits] == pytest.approx([1.0] * 3, abs=1e-5)
    assert [h.id for h in await store.keyword_query("ns", "two", k=3)] == ["r1"]
    await store.close()
    store = SQLiteVectorStore(db, DIM)  # the migrated store reopens as it is
    assert [h.id for h in await store.query("ns", vec(0, 1.0), k=1)] == ["r2"]
    await store.close()
    assert table_count(db, "vector_data") == 3
    assert table_count(db, "vector_records") == 5


async def test_the_configured_hnsw_parameters_reach_the_store(tmp_path: Path) -> None:
    from keel.config import MemorySettings
    from keel.memory import create_vector_store

    settings = MemorySettings(hnsw_connectivity=8, hnsw_expansion_add=40, hnsw_expansion_search=16)
    store = create_vector_store(tmp_path / "memory.db", DIM, settings)
    assert isinstance(store, SQLiteVectorStore)
    assert store.hnsw == sqlite_store.HNSWParams(8, 40, 16)
    await store.upsert("ns", [record("a", vec(1.0))])
    assert [h.id for h in await store.query("ns", vec(1.0), k=1)] == ["a"]
    assert store._indexes["ns"].hnsw.connectivity == 8
    await store.close()


async def test_k_beyond_sqlites_compound_select_limit(tmp_path: Path) -> None:
    store = SQLiteVectorStore(tmp_path / "memory.db", DIM)
    records = random_records(600)
    await store.upsert("ns", [*records, record("copy", records[0].vector)])
    hits = await store.query("ns", records[0].vector, k=601)
    assert len(hits) == 601
    assert [h.id for h in hits[:2]] == ["r0", "copy"]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    await store.close()
