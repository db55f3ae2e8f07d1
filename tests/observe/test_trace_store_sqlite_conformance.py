"""The trace-store conformance suite against the SQLite store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from trace_store_conformance import TraceStoreConformance

from keel.observe import SQLiteTraceStore, TraceStore


class TestSQLiteTraceStore(TraceStoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[TraceStore]:
        with SQLiteTraceStore(tmp_path / "traces.db") as s:
            yield s

    @pytest.fixture
    def reopen(self, tmp_path: Path) -> Callable[[], TraceStore]:
        return lambda: SQLiteTraceStore(tmp_path / "traces.db")
