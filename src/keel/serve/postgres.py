"""PostgreSQL implementations of the service's stores, for several ``keel serve`` processes.

Same tables as ``keel.serve.sqlite`` in one PostgreSQL schema (``keel`` by default), created
idempotently under an advisory lock. One async connection per store (psycopg 3), opened on first
use and retried once when the link is lost. Runs carry a lease (owner, expiry by the server's
clock), so exactly one process drives a run and another takes it over when the lease lapses.
Every change of a run or its events is announced with ``NOTIFY``, so a process streaming a run
that another process drives wakes at once; readers still poll as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from keel.errors import MissingDependencyError, StoreError
from keel.serve.base import (
    ApiKey,
    EventLog,
    KeyStore,
    RunRecord,
    RunRegistry,
    StoredEvent,
    check_tenant,
)

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "psycopg", "postgres", feature="The PostgreSQL service stores"
    ) from e

__all__ = ["PostgresEventLog", "PostgresKeyStore", "PostgresRunRegistry"]

KEY_PREFIX = "keel_"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_JSON_FIELDS = ("input", "interrupts", "answers", "trace_ids")
_RUN_FIELDS = (
    "id",
    "tenant",
    "agent",
    "status",
    "input",
    "output",
    "error",
    "interrupts",
    "answers",
    "trace_ids",
    "created_at",
    "updated_at",
)
_RUN_COLUMNS = ", ".join(_RUN_FIELDS)
_NOW = "extract(epoch from clock_timestamp())"
_T = TypeVar("_T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.serve_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    interrupts TEXT NOT NULL DEFAULT '[]',
    answers TEXT NOT NULL DEFAULT '{{}}',
    trace_ids TEXT NOT NULL DEFAULT '[]',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    lease_owner TEXT,
    lease_until DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS serve_runs_by_tenant ON {schema}.serve_runs (tenant, created_at);
CREATE INDEX IF NOT EXISTS serve_runs_by_status ON {schema}.serve_runs (status);
CREATE TABLE IF NOT EXISTS {schema}.serve_events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS {schema}.serve_api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
"""


def _describe(params: dict[str, Any]) -> str:
    user = params.get("user") or ""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or user or "(default database)"
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


class _Pg:
    """One lazily opened autocommit connection under a lock, with the tables created once."""

    def __init__(self, conninfo: str, schema: str, what: str) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must be a lowercase SQL identifier, got {schema!r}")
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error:
            raise StoreError(
                "invalid PostgreSQL connection string: use 'key=value' pairs or a postgresql:// URL"
            ) from None
        self.conninfo = conninfo
        self._password = str(params.get("password") or "")
        self.where = _describe(params)
        self.what = what
        self.schema = schema
        self.channel = f"keel_serve_{schema}"
        self._conn: Conn | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def error(self, action: str, e: BaseException) -> StoreError:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        return StoreError(f"cannot {action} in the PostgreSQL {self.what} {self.where}: {detail}")

    async def connect(self, name: str) -> Conn:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=10, application_name=name
            )
        except psycopg.Error as e:
            raise self.error("connect", e) from None
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"keel:{self.schema}",)
                )
                await conn.execute(sql.SQL(_DDL).format(schema=sql.Identifier(self.schema)))
        except psycopg.Error as e:
            await conn.close()
            raise self.error("create the tables", e) from e
        return conn

    async def run(self, action: str, op: Callable[[Conn], Awaitable[_T]]) -> _T:
        if self._closed:
            raise StoreError(f"cannot {action}: the PostgreSQL {self.what} is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a connection and a lock belong to the loop that made them
            if self._conn is not None:
                self._conn.pgconn.finish()
                self._conn = None
            self._lock = asyncio.Lock()
            self._loop = loop
        async with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = await self.connect(f"keel-serve-{self.what.replace(' ', '-')}")
                conn = self._conn
                try:
                    return await op(conn)
                except asyncio.CancelledError:
                    # a query cut off midway leaves the link unusable: the next use reconnects
                    conn.pgconn.finish()
                    self._conn = None
                    raise
                except psycopg.OperationalError as e:
                    if attempt == 2 or not conn.closed:
                        raise self.error(action, e) from e
                except psycopg.Error as e:
                    raise self.error(action, e) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            if self._loop is asyncio.get_running_loop():
                await self._conn.close()
            else:
                self._conn.pgconn.finish()
            self._conn = None


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    values = dict(zip(_RUN_FIELDS, row, strict=True))
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name])
    return RunRecord.model_validate(values)


class PostgresRunRegistry(RunRegistry):
    """Runs in PostgreSQL; every tenant read filters on ``tenant`` in SQL, every change of a run
    is announced on the schema's channel, and a lease decides which process drives a run."""

    def __init__(self, conninfo: str, *, schema: str = "keel") -> None:
        self._db = _Pg(conninfo, schema, "run registry")
        self._runs = self._db.table("serve_runs")
        self.where = self._db.where

    def __repr__(self) -> str:
        return f"PostgresRunRegistry({self._db.where!r}, schema={self._db.schema!r})"

    async def _notify(self, conn: Conn, run_id: str) -> None:
        await conn.execute("SELECT pg_notify(%s, %s)", (self._db.channel, run_id))

    async def create(self, record: RunRecord) -> None:
        values = record.model_dump()
        for name in _JSON_FIELDS:
            values[name] = json.dumps(values[name])
        query = sql.SQL(
            "INSERT INTO {} (" + _RUN_COLUMNS + ") VALUES (" + ",".join(["%s"] * 12) + ")"
        ).format(self._runs)

        async def op(conn: Conn) -> None:
            await conn.execute(query, [values[n] for n in _RUN_FIELDS])

        await self._db.run("record a run", op)

    async def get(self, tenant: str, run_id: str) -> RunRecord | None:
        query = sql.SQL("SELECT " + _RUN_COLUMNS + " FROM {} WHERE id = %s AND tenant = %s").format(
            self._runs
        )

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            return await (await conn.execute(query, (run_id, tenant))).fetchone()

        row = await self._db.run("read a run", op)
        return None if row is None else _run_from_row(row)

    async def update(self, run_id: str, **fields: Any) -> RunRecord:
        allowed = {"status", "output", "error", "interrupts", "answers", "trace_ids"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        values = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()}
        values["updated_at"] = time.time()
        sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
        query = sql.SQL("UPDATE {} SET {} WHERE id = %s RETURNING " + _RUN_COLUMNS).format(
            self._runs, sets
        )

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            async with conn.transaction():
                row = await (await conn.execute(query, [*values.values(), run_id])).fetchone()
                await self._notify(conn, run_id)
            return row

        row = await self._db.run("update a run", op)
        if row is None:
            raise StoreError(f"no run {run_id!r} in the run registry")
        return _run_from_row(row)

    async def modify(
        self,
        tenant: str,
        run_id: str,
        change: Callable[[RunRecord], dict[str, Any]],
        *,
        lease: tuple[str, float] | None = None,
    ) -> RunRecord | None:
        """Read the run under ``SELECT ... FOR UPDATE`` and apply ``change`` in one transaction,
        so two processes answering the same run's interrupts never lose an answer."""
        select = sql.SQL(
            "SELECT " + _RUN_COLUMNS + " FROM {} WHERE id = %s AND tenant = %s FOR UPDATE"
        ).format(self._runs)

        async def op(conn: Conn) -> RunRecord | None:
            async with conn.transaction():
                row = await (await conn.execute(select, (run_id, tenant))).fetchone()
                if row is None:
                    return None
                record = _run_from_row(row)
                fields = change(record)
                if not fields:
                    return record
                values = {k: json.dumps(v) if k in _JSON_FIELDS else v for k, v in fields.items()}
                values["updated_at"] = time.time()
                sets = sql.SQL(", ").join(
                    sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values
                )
                params = list(values.values())
                if lease is not None and fields.get("status") == "running":
                    # resumed by this owner: no sweeper elsewhere may take it in between
                    sets = sql.SQL(", ").join(
                        [sets, sql.SQL("lease_owner = %s, lease_until = " + _NOW + " + %s")]
                    )
                    params += [lease[0], lease[1]]
                query = sql.SQL("UPDATE {} SET {} WHERE id = %s RETURNING " + _RUN_COLUMNS).format(
                    self._runs, sets
                )
                new = await (await conn.execute(query, [*params, run_id])).fetchone()
                await self._notify(conn, run_id)
                assert new is not None
                return _run_from_row(new)

        return await self._db.run("change a run", op)

    async def list_runs(
        self,
        tenant: str,
        *,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 20,
    ) -> list[RunRecord]:
        text = "SELECT " + _RUN_COLUMNS + " FROM {} WHERE tenant = %s"
        params: list[Any] = [tenant]
        if agent is not None:
            text += " AND agent = %s"
            params.append(agent)
        if status is not None:
            text += " AND status = %s"
            params.append(status)
        text += " ORDER BY created_at DESC, id LIMIT %s"
        params.append(limit)
        query = sql.SQL(text).format(self._runs)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query, params)).fetchall()

        return [_run_from_row(r) for r in await self._db.run("list runs", op)]

    async def unfinished(self) -> list[RunRecord]:
        query = sql.SQL(
            "SELECT " + _RUN_COLUMNS + " FROM {} WHERE status = 'running' ORDER BY created_at"
        ).format(self._runs)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query)).fetchall()

        return [_run_from_row(r) for r in await self._db.run("list unfinished runs", op)]

    async def claimable(self) -> list[RunRecord]:
        query = sql.SQL(
            "SELECT " + _RUN_COLUMNS + " FROM {} WHERE status = 'running' AND "
            "(lease_until IS NULL OR lease_until < " + _NOW + ") ORDER BY created_at"
        ).format(self._runs)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query)).fetchall()

        return [_run_from_row(r) for r in await self._db.run("list orphaned runs", op)]

    async def claim(self, run_id: str, owner: str, ttl: float) -> bool:
        query = sql.SQL(
            "UPDATE {} SET lease_owner = %s, lease_until = " + _NOW + " + %s WHERE id = %s AND "
            "status = 'running' AND (lease_owner IS NULL OR lease_owner = %s OR lease_until < "
            + _NOW
            + ") RETURNING 1"
        ).format(self._runs)

        async def op(conn: Conn) -> bool:
            row = await (await conn.execute(query, (owner, ttl, run_id, owner))).fetchone()
            return row is not None

        return await self._db.run("take a run's lease", op)

    async def renew(self, owner: str, run_ids: list[str], ttl: float) -> list[str]:
        query = sql.SQL(
            "UPDATE {} SET lease_until = " + _NOW + " + %s WHERE lease_owner = %s "
            "AND status = 'running' AND id = ANY(%s) RETURNING id"
        ).format(self._runs)

        async def op(conn: Conn) -> list[str]:
            rows = await (await conn.execute(query, (ttl, owner, run_ids))).fetchall()
            return [str(r[0]) for r in rows]

        return await self._db.run("renew run leases", op)

    async def release(self, run_id: str, owner: str) -> None:
        query = sql.SQL(
            "UPDATE {} SET lease_owner = NULL, lease_until = NULL "
            "WHERE id = %s AND lease_owner = %s"
        ).format(self._runs)

        async def op(conn: Conn) -> None:
            await conn.execute(query, (run_id, owner))

        await self._db.run("release a run's lease", op)

    async def trace_ids(self, tenant: str, limit: int = 20) -> list[str]:
        query = sql.SQL(
            "SELECT trace_ids FROM {} WHERE tenant = %s AND trace_ids != '[]' "
            "ORDER BY created_at DESC LIMIT %s"
        ).format(self._runs)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query, (tenant, limit))).fetchall()

        ids: list[str] = []
        for (raw,) in await self._db.run("list traces", op):
            ids.extend(reversed(json.loads(raw)))
        return ids[:limit]

    async def has_trace(self, tenant: str, trace_id: str) -> bool:
        query = sql.SQL(
            "SELECT 1 FROM {} WHERE tenant = %s AND trace_ids::jsonb ? %s LIMIT 1"
        ).format(self._runs)

        async def op(conn: Conn) -> bool:
            return await (await conn.execute(query, (tenant, trace_id))).fetchone() is not None

        return await self._db.run("find a trace", op)

    async def aclose(self) -> None:
        await self._db.close()


class PostgresEventLog(EventLog):
    """Events of every run; ``append`` announces the run on the schema's channel, and
    ``listen`` calls back with the run id of every announcement, from any process."""

    def __init__(self, conninfo: str, *, schema: str = "keel") -> None:
        self._db = _Pg(conninfo, schema, "event log")
        self._events = self._db.table("serve_events")
        self._listener: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PostgresEventLog({self._db.where!r}, schema={self._db.schema!r})"

    async def append(self, run_id: str, event: StoredEvent) -> StoredEvent:
        last = sql.SQL("SELECT COALESCE(MAX(seq), 0) FROM {} WHERE run_id = %s").format(
            self._events
        )
        insert = sql.SQL("INSERT INTO {} (run_id, seq, body) VALUES (%s, %s, %s)").format(
            self._events
        )

        async def op(conn: Conn) -> StoredEvent:
            async with conn.transaction():
                # one writer per run at a time, so the next seq is free
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (run_id,))
                row = await (await conn.execute(last, (run_id,))).fetchone()
                assert row is not None
                stored = event.model_copy(update={"seq": int(row[0]) + 1})
                await conn.execute(insert, (run_id, stored.seq, stored.model_dump_json()))
                await conn.execute("SELECT pg_notify(%s, %s)", (self._db.channel, run_id))
            return stored

        return await self._db.run("append an event", op)

    async def read(self, run_id: str, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        query = sql.SQL(
            "SELECT body FROM {} WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s"
        ).format(self._events)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query, (run_id, after, limit))).fetchall()

        rows = await self._db.run("read events", op)
        return [StoredEvent.model_validate_json(r[0]) for r in rows]

    async def listen(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(run_id)`` for every change announced on the channel, until closed."""
        conn = await self._db.connect("keel-serve-listener")
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._db.channel)))

        async def pump() -> None:
            try:
                async for note in conn.notifies():
                    callback(note.payload)
            except psycopg.Error:
                pass  # the link was lost: streams fall back to polling
            finally:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()

        self._listener = asyncio.create_task(pump(), name="keel serve listener")

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        await self._db.close()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class PostgresKeyStore(KeyStore):
    """Keys as ``keel_<id>_<secret>`` like ``SqliteKeyStore``: only the SHA-256 is stored."""

    def __init__(self, conninfo: str, *, schema: str = "keel") -> None:
        self._db = _Pg(conninfo, schema, "key store")
        self._keys = self._db.table("serve_api_keys")

    def __repr__(self) -> str:
        return f"PostgresKeyStore({self._db.where!r}, schema={self._db.schema!r})"

    async def create(self, tenant: str, name: str = "") -> tuple[ApiKey, str]:
        check_tenant(tenant)
        key_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(id=key_id, tenant=tenant, name=name, created_at=time.time())
        query = sql.SQL(
            "INSERT INTO {} (id, tenant, name, hash, created_at) VALUES (%s,%s,%s,%s,%s)"
        ).format(self._keys)

        async def op(conn: Conn) -> None:
            await conn.execute(query, (key_id, tenant, name, _hash(secret), record.created_at))

        await self._db.run("create a key", op)
        return record, secret

    async def verify(self, secret: str) -> ApiKey | None:
        if not secret.startswith(KEY_PREFIX):
            return None
        key_id = secret[len(KEY_PREFIX) :].partition("_")[0]
        query = sql.SQL(
            "SELECT id, tenant, name, hash, created_at, revoked_at FROM {} WHERE id = %s"
        ).format(self._keys)

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            return await (await conn.execute(query, (key_id,))).fetchone()

        row = await self._db.run("check a key", op)
        expected = row[3] if row is not None else _hash("absent")
        matches = hmac.compare_digest(expected, _hash(secret))
        if row is None or not matches or row[5] is not None:
            return None
        return ApiKey(id=row[0], tenant=row[1], name=row[2], created_at=row[4])

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        text = "SELECT id, tenant, name, created_at, revoked_at FROM {}"
        params: tuple[Any, ...] = ()
        if tenant is not None:
            text += " WHERE tenant = %s"
            params = (tenant,)
        query = sql.SQL(text + " ORDER BY created_at, id").format(self._keys)

        async def op(conn: Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(query, params)).fetchall()

        return [
            ApiKey(id=r[0], tenant=r[1], name=r[2], created_at=r[3], revoked_at=r[4])
            for r in await self._db.run("list keys", op)
        ]

    async def revoke(self, key_id: str) -> bool:
        update = sql.SQL(
            "UPDATE {} SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
        ).format(self._keys)
        exists = sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(self._keys)

        async def op(conn: Conn) -> bool:
            cur = await conn.execute(update, (time.time(), key_id))
            if cur.rowcount:
                return True
            return await (await conn.execute(exists, (key_id,))).fetchone() is not None

        return await self._db.run("revoke a key", op)

    async def aclose(self) -> None:
        await self._db.close()
