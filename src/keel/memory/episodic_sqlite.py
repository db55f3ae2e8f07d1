"""The embedded ``EpisodicStore``: run records in one SQLite file (WAL).

Each run is one row: the record as JSON, plus the columns queries filter on (session, agent,
outcome, start time in epoch seconds), indexed. A record returns only after its transaction
committed, so an acknowledged run survives a crash.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from keel.errors import StoreError
from keel.memory.episodic import EpisodicStore, RetentionPolicy, RunQuery, RunRecord

__all__ = ["SQLiteEpisodicStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodic_runs (
    run_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    outcome TEXT NOT NULL,  -- 'success', 'failure' or 'running'
    started_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS episodic_runs_session ON episodic_runs (session_id, started_at);
CREATE INDEX IF NOT EXISTS episodic_runs_agent ON episodic_runs (agent, started_at);
CREATE INDEX IF NOT EXISTS episodic_runs_started ON episodic_runs (started_at);
"""


class SQLiteEpisodicStore(EpisodicStore):
    """Run records in the SQLite file at ``path`` (created if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open episodic store {self.path}: {e}") from e
        self._db: sqlite3.Connection | None = db

    async def record(self, run: RunRecord) -> None:
        row = (
            run.run_id,
            run.session_id,
            run.agent,
            run.outcome or "running",
            run.started_at.timestamp(),
            run.model_dump_json(),
        )
        await asyncio.to_thread(
            self._write, "INSERT OR REPLACE INTO episodic_runs VALUES (?, ?, ?, ?, ?, ?)", row
        )

    async def get(self, run_id: str) -> RunRecord | None:
        rows = await asyncio.to_thread(
            self._read, "SELECT record FROM episodic_runs WHERE run_id = ?", (run_id,)
        )
        return RunRecord.model_validate_json(rows[0][0]) if rows else None

    async def query(self, query: RunQuery) -> list[RunRecord]:
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (
            ("session_id", query.session_id),
            ("agent", query.agent),
            ("outcome", query.outcome),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            clauses.append("started_at >= ?")
            params.append(query.since.timestamp())
        if query.until is not None:
            clauses.append("started_at < ?")
            params.append(query.until.timestamp())
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT record FROM episodic_runs {where} "
            "ORDER BY started_at DESC, run_id DESC LIMIT ?"
        )
        rows = await asyncio.to_thread(self._read, sql, (*params, query.limit))
        return [RunRecord.model_validate_json(row[0]) for row in rows]

    async def apply_retention(self, policy: RetentionPolicy, now: datetime | None = None) -> int:
        return await asyncio.to_thread(self._retain, policy, now or datetime.now(UTC))

    async def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"episodic store {self.path} is closed")
        return self._db

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            try:
                self._conn().execute(sql, params)
            except sqlite3.Error as e:
                raise StoreError(f"cannot write episodic store {self.path}: {e}") from e

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[str]]:
        with self._lock:
            try:
                return self._conn().execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"cannot read episodic store {self.path}: {e}") from e

    def _retain(self, policy: RetentionPolicy, now: datetime) -> int:
        if now.tzinfo is None:
            raise ValueError("now must carry a time zone")
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                deleted = 0
                if policy.max_age is not None:
                    cutoff = (now - policy.max_age).timestamp()
                    cursor = db.execute("DELETE FROM episodic_runs WHERE started_at < ?", (cutoff,))
                    deleted += cursor.rowcount
                if policy.max_runs_per_agent is not None:
                    cursor = db.execute(
                        "DELETE FROM episodic_runs WHERE run_id IN (SELECT run_id FROM ("
                        "SELECT run_id, ROW_NUMBER() OVER (PARTITION BY agent "
                        "ORDER BY started_at DESC, run_id DESC) AS position FROM episodic_runs"
                        ") WHERE position > ?)",
                        (policy.max_runs_per_agent,),
                    )
                    deleted += cursor.rowcount
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"cannot apply retention to {self.path}: {e}") from e
            return deleted
