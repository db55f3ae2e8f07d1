"""One async PostgreSQL connection shared by the memory layer's PostgreSQL backends.

It follows the PostgreSQL checkpointer: one psycopg 3 ``AsyncConnection`` (autocommit), opened on
first use so constructors stay cheap and synchronous; the backend's tables are created then, under
an advisory lock, and stamped with a version. A lost connection is retried once on a new one
(callers only pass idempotent operations or whole transactions). Error messages name the server
(user, host, port, database) and never the password.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from keel.errors import MissingDependencyError, StoreError

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("psycopg", "postgres", feature="PostgreSQL memory") from e

__all__ = ["AsyncConn", "PgConnection", "check_identifier", "describe_dsn", "sql", "stamp_version"]

AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]
_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_identifier(kind: str, value: str) -> str:
    """``value`` if it is a plain lowercase SQL identifier, else ``ValueError``."""
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{kind} must be a lowercase SQL identifier (letters, digits, _): {value!r}"
        )
    return value


def describe_dsn(params: dict[str, Any]) -> str:
    """Where a server is, for messages: user, host, port and database, never the password."""
    user = params.get("user") or ""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or user or "(default database)"
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


async def stamp_version(
    conn: AsyncConn, schema: str, component: str, version: int, what: str
) -> None:
    """Record ``component``'s table version in ``schema``; refuse tables newer than ``version``.

    Call inside the transaction that holds the schema's advisory lock.
    """
    s = sql.Identifier(schema)
    await conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.keel_schema_versions "
            "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        ).format(s)
    )
    cur = await conn.execute(
        sql.SQL("SELECT version FROM {}.keel_schema_versions WHERE component = %s").format(s),
        (component,),
    )
    row = await cur.fetchone()
    if row is None:
        await conn.execute(
            sql.SQL(
                "INSERT INTO {}.keel_schema_versions (component, version) VALUES (%s, %s)"
            ).format(s),
            (component, version),
        )
    elif int(row[0]) > version:
        raise StoreError(
            f"the {what} tables ({component}) in schema {schema!r} have version {row[0]}, "
            f"newer than this Keel understands ({version})",
            hint="upgrade keel, or use another schema or table",
        )


class PgConnection:
    """A lazily opened connection; ``setup`` creates the backend's tables on the first connect,
    ``on_connect`` (if given) prepares every new connection (e.g. registers type adapters).

    ``what`` names the backend in messages ("PostgreSQL vector store").
    """

    def __init__(
        self,
        conninfo: str,
        *,
        what: str,
        application_name: str,
        setup: Callable[[AsyncConn], Awaitable[None]],
        on_connect: Callable[[AsyncConn], Awaitable[None]] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error:
            # libpq quotes the malformed part, which may hold the password: say nothing of it.
            raise StoreError(
                "invalid PostgreSQL connection string: use 'key=value' pairs or a postgresql:// URL"
            ) from None
        self._conninfo = conninfo
        self._password = str(params.get("password") or "")
        self.where = describe_dsn(params)
        self.what = what
        self.application_name = application_name
        self.connect_timeout = connect_timeout
        self._setup = setup
        self._on_connect = on_connect
        self._conn: AsyncConn | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self.closed = False

    def error(self, action: str, e: BaseException) -> StoreError:
        """A ``StoreError`` for a failed ``action``, with the server's first line, redacted."""
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        return StoreError(f"cannot {action} in the {self.what} {self.where}: {detail}")

    async def _connect(self) -> AsyncConn:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name=self.application_name,
            )
        except psycopg.Error as e:
            raise self.error("connect", e) from None
        if not self._ready:
            try:
                await self._setup(conn)
            except psycopg.Error as e:
                await conn.close()
                raise self.error("create the tables", e) from e
            except BaseException:
                await conn.close()
                raise
            self._ready = True
        if self._on_connect is not None:
            try:
                await self._on_connect(conn)
            except psycopg.Error as e:
                await conn.close()
                raise self.error("prepare the connection", e) from e
            except BaseException:
                await conn.close()
                raise
        self._conn = conn
        return conn

    async def run(self, action: str, op: Callable[[AsyncConn], Awaitable[_T]]) -> _T:
        """Run ``op`` on the connection, reconnecting and retrying once if the link was lost."""
        if self.closed:
            raise StoreError(f"cannot {action}: the {self.what} {self.where} is closed")
        self._follow_loop()
        async with self._lock:
            for attempt in (1, 2):
                conn = await self._connect()
                try:
                    return await op(conn)
                except psycopg.OperationalError as e:
                    if attempt == 2 or not conn.closed:
                        raise self.error(action, e) from e
                except psycopg.Error as e:
                    raise self.error(action, e) from e
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

    async def close(self) -> None:
        """Close the connection; later calls to ``run`` raise ``StoreError``. Idempotent."""
        self.closed = True
        self._follow_loop()
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
