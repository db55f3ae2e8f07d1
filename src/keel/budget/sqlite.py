"""``SqliteBudgetLedger``: budget counters in one SQLite file (WAL), shared by processes.

Each reservation is one ``BEGIN IMMEDIATE`` transaction: it takes the file's write lock before
reading the counters, so two processes can never both see room for the last unit of a budget.
Writes run inline on the event loop, like the checkpointer's (a WAL commit takes microseconds).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

from keel.budget.base import (
    COUNTERS,
    Budget,
    BudgetLedger,
    Limits,
    Reservation,
    ScopeSpend,
    Spend,
    check,
    day_filter,
)
from keel.errors import StoreError

__all__ = ["SqliteBudgetLedger"]

_COLS = ", ".join(COUNTERS)
_SUMS = ", ".join(f"COALESCE(SUM({c}), 0)" for c in COUNTERS)
_ZERO = ", ".join("0" for _ in COUNTERS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS budget_usage (
    key TEXT PRIMARY KEY,
    {", ".join(f"{c} REAL NOT NULL DEFAULT 0" for c in COUNTERS)},
    limits TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_reservations (
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    {", ".join(f"{c} REAL NOT NULL" for c in COUNTERS)},
    expires_at REAL NOT NULL,
    PRIMARY KEY (id, key)
);
CREATE INDEX IF NOT EXISTS budget_reservations_key ON budget_reservations (key, expires_at);
"""


class SqliteBudgetLedger(BudgetLedger):
    """Budget counters in ``path`` (created with its folder if missing)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            self._prepare(busy_timeout)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the budget ledger {self.path}: {e}") from None

    def __repr__(self) -> str:
        return f"SqliteBudgetLedger({str(self.path)!r})"

    def _prepare(self, busy_timeout: float) -> None:
        """WAL mode and the tables, safe when several processes open a new file at once.

        The tables are created in one ``BEGIN IMMEDIATE`` transaction, so a second process waits
        for the write lock (the busy timeout applies) instead of failing on a lock upgrade, which
        SQLite refuses at once to avoid a deadlock; that and the WAL switch are retried until the
        busy timeout has passed.
        """
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise StoreError(f"cannot {action} in the budget ledger {self.path}: {e}") from e

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        db = self._db
        with self._errors(action):
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    async def reserve(
        self,
        budgets: Sequence[Budget],
        amount: Spend,
        *,
        ttl: float = 300.0,
        now: datetime | None = None,
    ) -> Reservation:
        stamp = time.time()
        rid = Reservation.new_id()
        keys = [b.scope.key(now) for b in budgets]
        remaining: dict[str, dict[str, float]] = {}
        with self._write("reserve") as db:
            db.execute("DELETE FROM budget_reservations WHERE expires_at <= ?", (stamp,))
            for key, budget in zip(keys, budgets, strict=True):
                used, reserved = _counters(db, key, stamp)
                remaining[key] = check(key, budget.limits, used, reserved, amount)
            for key, budget in zip(keys, budgets, strict=True):
                db.execute(
                    f"INSERT INTO budget_usage (key, {_COLS}, limits, updated_at) "
                    f"VALUES (?, {_ZERO}, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                    "limits = excluded.limits, updated_at = excluded.updated_at",
                    (key, budget.limits.model_dump_json(exclude_none=True), stamp),
                )
                db.execute(
                    f"INSERT OR REPLACE INTO budget_reservations (id, key, {_COLS}, expires_at) "
                    f"VALUES (?, ?, {', '.join('?' for _ in COUNTERS)}, ?)",
                    (rid, key, *amount.values(), stamp + ttl),
                )
        return Reservation(rid, tuple(keys), amount, stamp + ttl, remaining)

    async def settle(self, reservation: Reservation, actual: Spend) -> None:
        values = actual.values()
        add = ", ".join(f"{c} = {c} + ?" for c in COUNTERS)
        with self._write("settle") as db:
            db.execute("DELETE FROM budget_reservations WHERE id = ?", (reservation.id,))
            for key in reservation.keys:
                db.execute(
                    f"INSERT INTO budget_usage (key, {_COLS}, updated_at) VALUES "
                    f"(?, {', '.join('?' for _ in COUNTERS)}, ?) ON CONFLICT (key) DO UPDATE "
                    f"SET {add}, updated_at = excluded.updated_at",
                    (key, *values, time.time(), *values),
                )

    async def spend(self, keys: Sequence[str]) -> list[ScopeSpend]:
        out: list[ScopeSpend] = []
        stamp = time.time()
        with self._errors("read"):
            for key in keys:
                used, reserved = _counters(self._db, key, stamp)
                row = self._db.execute(
                    "SELECT limits FROM budget_usage WHERE key = ?", (key,)
                ).fetchone()
                limits = Limits.model_validate(json.loads(row[0])) if row and row[0] else None
                out.append(ScopeSpend(key, Spend.of(used), Spend.of(reserved), limits))
        return out

    async def scopes(self, *, day: str | date | None = None) -> list[str]:
        with self._errors("list scopes"):
            rows = self._db.execute("SELECT key FROM budget_usage").fetchall()
        return day_filter([r[0] for r in rows], day)

    async def aclose(self) -> None:
        self._db.close()


def _counters(
    db: sqlite3.Connection, key: str, stamp: float
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    row = db.execute(f"SELECT {_COLS} FROM budget_usage WHERE key = ?", (key,)).fetchone()
    used = tuple(float(v) for v in row) if row else (0.0,) * len(COUNTERS)
    held = db.execute(
        f"SELECT {_SUMS} FROM budget_reservations WHERE key = ? AND expires_at > ?", (key, stamp)
    ).fetchone()
    return used, tuple(float(v) for v in held)
