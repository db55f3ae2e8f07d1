"""The SQLite episodic store: the conformance suite, plus its own failure modes."""

from __future__ import annotations

from pathlib import Path

import pytest
from episodic_conformance import (  # noqa: F401 - the model checks run here too
    EpisodicStoreConformance,
    OpenEpisodicStore,
    run,
    test_a_failure_needs_a_reason_and_times_need_a_zone,
)

from keel.errors import StoreError
from keel.memory.episodic_sqlite import SQLiteEpisodicStore


class TestSQLiteEpisodicStore(EpisodicStoreConformance):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> OpenEpisodicStore:
        return lambda: SQLiteEpisodicStore(tmp_path / "episodes.db")


async def test_a_closed_store_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteEpisodicStore(tmp_path / "e.db")
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.record(run("r", 0))


def test_an_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open episodic store"):
        SQLiteEpisodicStore(tmp_path / "dir.db")
