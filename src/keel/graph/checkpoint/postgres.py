"""A ``Checkpointer`` on PostgreSQL, for runs shared by several processes or machines.

One async connection per checkpointer (psycopg 3), opened on first use, so the constructor is
cheap and synchronous like ``SqliteCheckpointer``'s. Every write is a single atomic statement or
transaction (upserts, ``ON CONFLICT DO NOTHING``), so any number of checkpointers in any number
of processes can write the same tables at once. The tables live in one PostgreSQL schema
(``keel`` by default), created idempotently under an advisory lock and stamped with a version.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from keel.errors import MissingDependencyError, StoreError
from keel.graph.checkpoint.base import Checkpoint, Checkpointer

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "psycopg", "postgres", feature="The PostgreSQL checkpointer"
    ) from e

__all__ = ["SCHEMA_VERSION", "PostgresCheckpointer"]

SCHEMA_VERSION = 1
"""The version of the tables this module writes; a store stamped newer than this is refused."""

_COMPONENT = "graph_checkpoints"
_COLUMNS = "run_id, step, state, tasks, status, extra, created_at"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_T = TypeVar("_T")

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.keel_schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.graph_checkpoints (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    state TEXT NOT NULL,
    tasks TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'interrupted', 'done')),
    extra TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE INDEX IF NOT EXISTS graph_checkpoints_created ON {schema}.graph_checkpoints (created_at);
CREATE TABLE IF NOT EXISTS {schema}.graph_effects (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS graph_effects_created ON {schema}.graph_effects (created_at);
"""


def _describe(params: dict[str, Any]) -> str:
    """Where the store is, for messages: user, host, port and database, never the password."""
    user = params.get("user") or ""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or user or "(default database)"
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


class PostgresCheckpointer(Checkpointer):
    """Checkpoints and the effect journal in PostgreSQL tables in ``schema``.

    ``conninfo`` is a libpq connection string (``"host=... dbname=..."`` or a
    ``postgresql://`` URL); prefer ``PGPASSWORD`` or a passfile to a password in it. Retention
    works as in ``SqliteCheckpointer``: ``keep_last`` prunes a run on every write, ``ttl``
    (seconds) drops old rows when the store is first opened and on ``prune()``. Connection loss
    is retried once on a new connection: every operation here is idempotent.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "keel",
        keep_last: int | None = None,
        ttl: float | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be at least 1 (the latest checkpoint is needed)")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive")
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lowercase SQL identifier (letters, digits, _), got {schema!r}"
            )
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error:
            # libpq quotes the malformed part, which may hold the password: say nothing of it.
            raise StoreError(
                "invalid PostgreSQL connection string: use 'key=value' pairs or a postgresql:// URL"
            ) from None
        self._conninfo = conninfo
        self._password = str(params.get("password") or "")
        self.where = _describe(params)
        self.schema = schema
        self.keep_last = keep_last
        self.ttl = ttl
        self.connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._schema_ready = False
        self._closed = False
        s = sql.Identifier(schema)
        self._table = sql.SQL("{}.graph_checkpoints").format(s)
        self._effects = sql.SQL("{}.graph_effects").format(s)

    def __repr__(self) -> str:
        return f"PostgresCheckpointer({self.where!r}, schema={self.schema!r})"

    def _error(self, action: str, e: BaseException) -> StoreError:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        return StoreError(
            f"cannot {action} in the PostgreSQL checkpoint store {self.where}: {detail}"
        )

    async def _connect(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name="keel-checkpointer",
            )
        except psycopg.Error as e:
            raise self._error("connect", e) from None
        self._conn = conn
        if not self._schema_ready:
            try:
                await self._create_schema(conn)
            except BaseException:
                await conn.close()
                self._conn = None
                raise
            self._schema_ready = True
            if self.ttl is not None:
                try:
                    await self._prune(conn, None, self.ttl)
                except psycopg.Error as e:
                    raise self._error("prune expired checkpoints", e) from e
        return conn

    async def _create_schema(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        """Create the tables if missing; concurrent creators wait on one advisory lock."""
        s = sql.Identifier(self.schema)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"keel:{self.schema}",)
                )
                await conn.execute(sql.SQL(_DDL).format(schema=s))
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT version FROM {}.keel_schema_versions WHERE component = %s"
                    ).format(s),
                    (_COMPONENT,),
                )
                row = await cur.fetchone()
                if row is None:
                    await conn.execute(
                        sql.SQL(
                            "INSERT INTO {}.keel_schema_versions (component, version) "
                            "VALUES (%s, %s)"
                        ).format(s),
                        (_COMPONENT, SCHEMA_VERSION),
                    )
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(
                        f"the checkpoint tables in schema {self.schema!r} of {self.where} have "
                        f"version {row[0]}, newer than this Keel understands ({SCHEMA_VERSION})",
                        hint="upgrade keel, or use another schema",
                    )
        except psycopg.Error as e:
            raise self._error("create the tables", e) from e

    async def _run(
        self,
        action: str,
        op: Callable[[psycopg.AsyncConnection[tuple[Any, ...]]], Awaitable[_T]],
    ) -> _T:
        """Run ``op`` on the connection, reconnecting and retrying once if the link was lost."""
        if self._closed:
            raise StoreError(f"cannot {action}: the PostgreSQL checkpointer is closed")
        self._follow_loop()
        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connect()
                try:
                    return await op(conn)
                except psycopg.OperationalError as e:
                    if attempt == 2 or not conn.closed:
                        raise self._error(action, e) from e
                except psycopg.Error as e:
                    raise self._error(action, e) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _follow_loop(self) -> None:
        """Start afresh when used from a new event loop (a second ``asyncio.run``): an async
        connection and lock belong to the loop that made them."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._conn is not None:
            self._conn.pgconn.finish()  # closes the socket without the old loop
            self._conn = None
        self._lock = asyncio.Lock()
        self._loop = loop

    async def put(self, checkpoint: Checkpoint) -> None:
        c = checkpoint
        row = (c.run_id, c.step, c.state, c.tasks, c.status, c.extra, c.created_at or time.time())
        upsert = sql.SQL(
            "INSERT INTO {} (" + _COLUMNS + ") VALUES (%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (run_id, step) DO UPDATE SET state = EXCLUDED.state, "
            "tasks = EXCLUDED.tasks, status = EXCLUDED.status, extra = EXCLUDED.extra, "
            "created_at = EXCLUDED.created_at"
        ).format(self._table)
        trim = sql.SQL("DELETE FROM {} WHERE run_id = %s AND step <= %s").format(self._table)
        keep = self.keep_last

        async def op(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
            if keep is None:
                await conn.execute(upsert, row)
                return
            async with conn.transaction():
                await conn.execute(upsert, row)
                await conn.execute(trim, (c.run_id, c.step - keep))

        await self._run("save a checkpoint", op)

    async def latest(self, run_id: str) -> Checkpoint | None:
        found = await self.history(run_id, limit=1)
        return found[0] if found else None

    async def history(self, run_id: str, *, limit: int | None = None) -> list[Checkpoint]:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        query = sql.SQL(
            "SELECT " + _COLUMNS + " FROM {} WHERE run_id = %s ORDER BY step DESC LIMIT %s"
        ).format(self._table)

        async def op(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> list[Checkpoint]:
            cur = await conn.execute(query, (run_id, limit))
            return [Checkpoint(*r) for r in await cur.fetchall()]

        return await self._run("read checkpoints", op)

    async def get_effect(self, run_id: str, key: str) -> str | None:
        query = sql.SQL("SELECT result FROM {} WHERE run_id = %s AND key = %s").format(
            self._effects
        )

        async def op(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> str | None:
            row = await (await conn.execute(query, (run_id, key))).fetchone()
            return None if row is None else str(row[0])

        return await self._run("read the effect journal", op)

    async def put_effect(self, run_id: str, key: str, result: str) -> None:
        insert = sql.SQL(
            "INSERT INTO {} (run_id, key, result, created_at) VALUES (%s,%s,%s,%s) "
            "ON CONFLICT (run_id, key) DO NOTHING"
        ).format(self._effects)

        async def op(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
            await conn.execute(insert, (run_id, key, result, time.time()))

        await self._run("journal an effect", op)

    async def prune(self, *, keep_last: int | None = None, older_than: float | None = None) -> int:
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        if keep_last is None and older_than is None:
            keep_last, older_than = self.keep_last, self.ttl
        return await self._run(
            "prune checkpoints", lambda conn: self._prune(conn, keep_last, older_than)
        )

    async def _prune(
        self,
        conn: psycopg.AsyncConnection[tuple[Any, ...]],
        keep_last: int | None,
        older_than: float | None,
    ) -> int:
        removed = 0
        async with conn.transaction():
            if older_than is not None:
                cutoff = time.time() - older_than
                for table in (self._table, self._effects):
                    cur = await conn.execute(
                        sql.SQL("DELETE FROM {} WHERE created_at < %s").format(table), (cutoff,)
                    )
                    removed += max(cur.rowcount, 0)
            if keep_last is not None:
                cur = await conn.execute(
                    sql.SQL(
                        "DELETE FROM {t} WHERE (run_id, step) IN (SELECT run_id, step FROM "
                        "(SELECT run_id, step, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY "
                        "step DESC) AS n FROM {t}) AS ranked WHERE n > %s)"
                    ).format(t=self._table),
                    (keep_last,),
                )
                removed += max(cur.rowcount, 0)
        return removed

    async def delete_run(self, run_id: str) -> None:
        async def op(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
            async with conn.transaction():
                for table in (self._table, self._effects):
                    await conn.execute(
                        sql.SQL("DELETE FROM {} WHERE run_id = %s").format(table), (run_id,)
                    )

        await self._run("delete a run", op)

    async def aclose(self) -> None:
        self._closed = True
        self._follow_loop()
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
