"""SQLite implementations of the service's stores (one process; WAL, so readers never block).

Writes happen inline on the event loop thread, like ``SqliteCheckpointer``: a WAL commit takes
microseconds. Keys are SHA-256 hashes of 256-bit random secrets (a slow hash adds nothing for
secrets that cannot be guessed), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from keel.errors import StoreError
from keel.serve.base import (
    ApiKey,
    EventLog,
    KeyStore,
    RunRecord,
    RunRegistry,
    StoredEvent,
    check_tenant,
)

__all__ = ["KEY_PREFIX", "SqliteEventLog", "SqliteKeyStore", "SqliteRunRegistry"]

KEY_PREFIX = "keel_"
_JSON_FIELDS = ("input", "interrupts", "answers", "trace_ids")


class _Db:
    """One SQLite connection in WAL mode, shared between threads under a lock."""

    def __init__(self, path: Path, schema: str, what: str) -> None:
        self.path = Path(path).expanduser()
        self.what = what
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.executescript(schema)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the {what} {self.path}: {e}") from e

    @contextmanager
    def session(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise StoreError(f"cannot {action} in the {self.what} {self.path}: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    interrupts TEXT NOT NULL DEFAULT '[]',
    answers TEXT NOT NULL DEFAULT '{}',
    trace_ids TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant, created_at);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""
_RUN_COLUMNS = (
    "id, tenant, agent, status, input, output, error, interrupts, answers, trace_ids, "
    "created_at, updated_at"
)


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    names = [c.strip() for c in _RUN_COLUMNS.split(",")]
    values = dict(zip(names, row, strict=True))
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name])
    return RunRecord.model_validate(values)


class SqliteRunRegistry(RunRegistry):
    """Runs in one SQLite file; every tenant read filters on the ``tenant`` column."""

    def __init__(self, path: Path) -> None:
        self._db = _Db(path, _RUNS_SCHEMA, "run registry")

    async def create(self, record: RunRecord) -> None:
        values = record.model_dump()
        for name in _JSON_FIELDS:
            values[name] = json.dumps(values[name])
        names = [c.strip() for c in _RUN_COLUMNS.split(",")]
        with self._db.session("record a run") as conn:
            conn.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({','.join('?' * len(names))})",
                [values[n] for n in names],
            )

    async def get(self, tenant: str, run_id: str) -> RunRecord | None:
        with self._db.session("read a run") as conn:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ? AND tenant = ?", (run_id, tenant)
            ).fetchone()
        return None if row is None else _run_from_row(row)

    async def update(self, run_id: str, **fields: Any) -> RunRecord:
        allowed = {"status", "output", "error", "interrupts", "answers", "trace_ids"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        values = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()}
        values["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._db.session("update a run") as conn:
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*values.values(), run_id])
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id!r} in the run registry")
        return _run_from_row(row)

    async def list_runs(
        self,
        tenant: str,
        *,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 20,
    ) -> list[RunRecord]:
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant = ?"
        params: list[Any] = [tenant]
        if agent is not None:
            sql += " AND agent = ?"
            params.append(agent)
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        params.append(limit)
        with self._db.session("list runs") as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_run_from_row(r) for r in rows]

    async def unfinished(self) -> list[RunRecord]:
        with self._db.session("list unfinished runs") as conn:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY created_at"
            ).fetchall()
        return [_run_from_row(r) for r in rows]

    async def trace_ids(self, tenant: str, limit: int = 20) -> list[str]:
        with self._db.session("list traces") as conn:
            rows = conn.execute(
                "SELECT trace_ids FROM runs WHERE tenant = ? AND trace_ids != '[]' "
                "ORDER BY created_at DESC LIMIT ?",
                (tenant, limit),
            ).fetchall()
        ids: list[str] = []
        for (raw,) in rows:
            ids.extend(reversed(json.loads(raw)))
        return ids[:limit]

    async def has_trace(self, tenant: str, trace_id: str) -> bool:
        with self._db.session("find a trace") as conn:
            row = conn.execute(
                "SELECT 1 FROM runs, json_each(runs.trace_ids) "
                "WHERE runs.tenant = ? AND json_each.value = ? LIMIT 1",
                (tenant, trace_id),
            ).fetchone()
        return row is not None

    async def aclose(self) -> None:
        self._db.close()


class SqliteEventLog(EventLog):
    """Events of every run, in the same kind of SQLite file as the registry."""

    def __init__(self, path: Path) -> None:
        self._db = _Db(path, _RUNS_SCHEMA, "event log")

    async def append(self, run_id: str, event: StoredEvent) -> StoredEvent:
        with self._db.session("append an event") as conn:
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)
            ).fetchone()
            stored = event.model_copy(update={"seq": last + 1})
            conn.execute(
                "INSERT INTO events (run_id, seq, body) VALUES (?, ?, ?)",
                (run_id, stored.seq, stored.model_dump_json()),
            )
        return stored

    async def read(self, run_id: str, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        with self._db.session("read events") as conn:
            rows = conn.execute(
                "SELECT body FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, after, limit),
            ).fetchall()
        return [StoredEvent.model_validate_json(r[0]) for r in rows]

    async def aclose(self) -> None:
        self._db.close()


_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class SqliteKeyStore(KeyStore):
    """Keys as ``keel_<id>_<secret>``: the id finds the row, the SHA-256 of the whole key is
    compared in constant time. Only the hash is stored."""

    def __init__(self, path: Path) -> None:
        self._db = _Db(path, _KEYS_SCHEMA, "key store")

    async def create(self, tenant: str, name: str = "") -> tuple[ApiKey, str]:
        check_tenant(tenant)
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(id=key_id, tenant=tenant, name=name, created_at=time.time())
        with self._db.session("create a key") as conn:
            conn.execute(
                "INSERT INTO api_keys (id, tenant, name, hash, created_at) VALUES (?,?,?,?,?)",
                (key_id, tenant, name, _hash(secret), record.created_at),
            )
        return record, secret

    async def verify(self, secret: str) -> ApiKey | None:
        if not secret.startswith(KEY_PREFIX):
            return None
        key_id = secret[len(KEY_PREFIX) :].partition("_")[0]
        with self._db.session("check a key") as conn:
            row = conn.execute(
                "SELECT id, tenant, name, hash, created_at, revoked_at FROM api_keys WHERE id = ?",
                (key_id,),
            ).fetchone()
        expected = row[3] if row is not None else _hash("absent")
        matches = hmac.compare_digest(expected, _hash(secret))
        if row is None or not matches or row[5] is not None:
            return None
        return ApiKey(id=row[0], tenant=row[1], name=row[2], created_at=row[4])

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        sql = "SELECT id, tenant, name, created_at, revoked_at FROM api_keys"
        params: tuple[Any, ...] = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            params = (tenant,)
        with self._db.session("list keys") as conn:
            rows = conn.execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [
            ApiKey(id=r[0], tenant=r[1], name=r[2], created_at=r[3], revoked_at=r[4]) for r in rows
        ]

    async def revoke(self, key_id: str) -> bool:
        with self._db.session("revoke a key") as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            if cur.rowcount:
                return True
            return (
                conn.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone()
                is not None
            )

    async def aclose(self) -> None:
        self._db.close()
