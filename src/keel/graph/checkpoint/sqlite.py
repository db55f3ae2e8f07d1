"""A ``Checkpointer`` on one SQLite file in WAL mode.

Writes happen inline on the event loop thread: a WAL commit takes microseconds, much less than a
hop to a worker thread would. With ``synchronous=NORMAL`` (the default here) a commit survives
the process being killed at any point; ``synchronous="FULL"`` also survives power loss.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from keel.errors import StoreError
from keel.graph.checkpoint.base import Checkpoint, Checkpointer

__all__ = ["SqliteCheckpointer"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    state TEXT NOT NULL,
    tasks TEXT NOT NULL,
    status TEXT NOT NULL,
    extra TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkpoints_created ON checkpoints (created_at);
CREATE TABLE IF NOT EXISTS effects (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS effects_created ON effects (created_at);
"""
_COLUMNS = "run_id, step, state, tasks, status, extra, created_at"


@contextmanager
def _store_errors(path: Path, action: str) -> Iterator[None]:
    """Turn SQLite failures (locked, full disk, corrupt file) into a typed ``StoreError``."""
    try:
        yield
    except sqlite3.Error as e:
        raise StoreError(f"cannot {action} in the checkpoint store {path}: {e}") from e


class SqliteCheckpointer(Checkpointer):
    """Checkpoints and the effect journal in ``path``; ``keep_last`` prunes on every write.

    ``ttl`` (seconds) removes checkpoints and effects older than that when the file is opened
    and whenever ``prune()`` is called without arguments.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        keep_last: int | None = None,
        ttl: float | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be at least 1 (the latest checkpoint is needed)")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive")
        self.path = Path(path)
        self.keep_last = keep_last
        self.ttl = ttl
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the checkpoint store {self.path}: {e}") from None
        if ttl is not None:
            self._prune_sync(None, ttl)

    async def put(self, checkpoint: Checkpoint) -> None:
        c = checkpoint
        created = c.created_at or time.time()
        row = (c.run_id, c.step, c.state, c.tasks, c.status, c.extra, created)
        with _store_errors(self.path, "save a checkpoint"):
            self._put(row, c.run_id, c.step)

    def _put(self, row: tuple[object, ...], run_id: str, step: int) -> None:
        db = self._db
        if self.keep_last is None:
            db.execute(
                f"INSERT OR REPLACE INTO checkpoints ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)", row
            )
            return
        db.execute("BEGIN")
        try:
            db.execute(
                f"INSERT OR REPLACE INTO checkpoints ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)", row
            )
            db.execute(
                "DELETE FROM checkpoints WHERE run_id = ? AND step <= ?",
                (run_id, step - self.keep_last),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def latest(self, run_id: str) -> Checkpoint | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM checkpoints WHERE run_id = ? ORDER BY step DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        return None if row is None else Checkpoint(*row)

    async def history(self, run_id: str, *, limit: int | None = None) -> list[Checkpoint]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM checkpoints WHERE run_id = ? ORDER BY step DESC LIMIT ?",
            (run_id, -1 if limit is None else limit),
        ).fetchall()
        return [Checkpoint(*r) for r in rows]

    async def get_effect(self, run_id: str, key: str) -> str | None:
        row = self._db.execute(
            "SELECT result FROM effects WHERE run_id = ? AND key = ?", (run_id, key)
        ).fetchone()
        return None if row is None else str(row[0])

    async def put_effect(self, run_id: str, key: str, result: str) -> None:
        with _store_errors(self.path, "journal an effect"):
            self._db.execute(
                "INSERT OR IGNORE INTO effects (run_id, key, result, created_at) VALUES (?,?,?,?)",
                (run_id, key, result, time.time()),
            )

    async def prune(self, *, keep_last: int | None = None, older_than: float | None = None) -> int:
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        if keep_last is None and older_than is None:
            keep_last, older_than = self.keep_last, self.ttl
        return self._prune_sync(keep_last, older_than)

    def _prune_sync(self, keep_last: int | None, older_than: float | None) -> int:
        db = self._db
        removed = 0
        db.execute("BEGIN")
        try:
            if older_than is not None:
                cutoff = time.time() - older_than
                removed += db.execute(
                    "DELETE FROM checkpoints WHERE created_at < ?", (cutoff,)
                ).rowcount
                removed += db.execute(
                    "DELETE FROM effects WHERE created_at < ?", (cutoff,)
                ).rowcount
            if keep_last is not None:
                removed += db.execute(
                    "DELETE FROM checkpoints WHERE (run_id, step) IN (SELECT run_id, step FROM "
                    "(SELECT run_id, step, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY step "
                    "DESC) AS n FROM checkpoints) WHERE n > ?)",
                    (keep_last,),
                ).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return removed

    async def delete_run(self, run_id: str) -> None:
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
        self._db.execute("DELETE FROM effects WHERE run_id = ?", (run_id,))
        self._db.execute("COMMIT")

    async def aclose(self) -> None:
        self._db.close()
