"""Every checkpointer backend passes the same conformance suite."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from keel.errors import StoreError
from keel.graph import MemoryCheckpointer, SqliteCheckpointer
from keel.graph.checkpoint import Checkpoint, Checkpointer
from keel.graph.checkpoint.conformance import CheckpointerConformance


class TestSqliteCheckpointer(CheckpointerConformance):
    @pytest.fixture
    async def checkpointer(self, tmp_path: Path) -> AsyncIterator[Checkpointer]:
        cp = SqliteCheckpointer(tmp_path / "checkpoints.db")
        yield cp
        await cp.aclose()

    @pytest.fixture
    def make_checkpointer(self, tmp_path: Path) -> Callable[..., Checkpointer]:
        return lambda **kw: SqliteCheckpointer(tmp_path / "retained.db", **kw)


class TestMemoryCheckpointer(CheckpointerConformance):
    @pytest.fixture
    def checkpointer(self) -> Checkpointer:
        return MemoryCheckpointer()

    @pytest.fixture
    def make_checkpointer(self) -> Callable[..., Checkpointer]:
        return lambda **kw: MemoryCheckpointer(**kw)


async def test_sqlite_uses_wal_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    cp = SqliteCheckpointer(path)
    assert cp._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await cp.put_effect("r", "k", '"v"')
    await cp.aclose()
    again = SqliteCheckpointer(path)
    assert await again.get_effect("r", "k") == '"v"'
    await again.aclose()


def test_bad_retention_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        SqliteCheckpointer(tmp_path / "c.db", keep_last=0)
    with pytest.raises(ValueError, match="ttl"):
        SqliteCheckpointer(tmp_path / "c.db", ttl=-1)


async def test_sqlite_failures_are_store_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-db.db"
    garbage.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(StoreError, match="cannot open the checkpoint store"):
        SqliteCheckpointer(garbage)
    cp = SqliteCheckpointer(tmp_path / "ok.db")
    await cp.aclose()
    with pytest.raises(StoreError, match="cannot save a checkpoint"):
        await cp.put(Checkpoint("r", 0, "{}"))
