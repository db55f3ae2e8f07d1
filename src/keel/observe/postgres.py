"""``PostgresTraceStore``: the trace store in PostgreSQL, shared by every process of a deployment.

The OpenTelemetry exporter writes spans synchronously as they end, so this store uses one
synchronous psycopg 3 connection per store, guarded by a lock (the exporter, ``keel trace`` and
``keel ui`` all call it from plain threads). Writes are single upserts in one transaction, so any
number of processes can write the same table at once and each sees the others' traces. The table
lives in one schema (``keel`` by default), created idempotently under an advisory lock and stamped
with a version, like the PostgreSQL checkpointer's.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from keel.errors import MissingDependencyError, StoreError
from keel.observe import semconv as sc
from keel.observe.base import MIN_PREFIX, TraceStore
from keel.observe.records import SpanEvent, SpanRecord, TraceSummary, summarize_trace

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("psycopg", "postgres", feature="The PostgreSQL trace store") from e

__all__ = ["SCHEMA_VERSION", "PostgresTraceStore"]

SCHEMA_VERSION = 1
"""The version of the table this module writes; a store stamped newer than this is refused."""

_COMPONENT = "trace_spans"
_COLUMNS = (
    "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status, status_message, "
    "attributes, events"
)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_HEX = frozenset("0123456789abcdef")
_LIST_HINT = "list recent traces with: keel trace list"
_T = TypeVar("_T")
Conn = psycopg.Connection[tuple[Any, ...]]

# Ids use the "C" collation so that prefix ranges and ordering do not depend on the locale.
# Attributes and events are JSON text, as in the SQLite store (jsonb would reject \u0000).
_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.keel_schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.trace_spans (
    trace_id TEXT COLLATE "C" NOT NULL,
    span_id TEXT COLLATE "C" NOT NULL,
    parent_span_id TEXT COLLATE "C",
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns BIGINT NOT NULL,
    end_ns BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'unset')),
    status_message TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '{{}}',
    events TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS trace_spans_by_trace_start ON {schema}.trace_spans (trace_id, start_ns);
"""


def _describe(params: dict[str, Any]) -> str:
    """Where the store is, for messages: user, host, port and database, never the password."""
    user = params.get("user") or ""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or user or "(default database)"
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


class PostgresTraceStore(TraceStore):
    """Spans of many traces in the PostgreSQL table ``SCHEMA.trace_spans``.

    ``dsn`` is a libpq connection string (``"host=... dbname=..."`` or a ``postgresql://`` URL);
    prefer ``PGPASSWORD`` or a passfile to a password in it. The connection opens on first use,
    so the constructor is cheap; a lost connection is retried once on a new one (every operation
    here is idempotent).
    """

    def __init__(self, dsn: str, *, schema: str = "keel", connect_timeout: float = 10.0) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lowercase SQL identifier (letters, digits, _), got {schema!r}"
            )
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            # libpq quotes the malformed part, which may hold the password: say nothing of it.
            raise StoreError(
                "invalid PostgreSQL connection string: use 'key=value' pairs or a postgresql:// URL"
            ) from None
        self._dsn = dsn
        self._password = str(params.get("password") or "")
        self.where = _describe(params)
        self.schema = schema
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: Conn | None = None
        self._schema_ready = False
        self._closed = False
        self._table = sql.SQL("{}.trace_spans").format(sql.Identifier(schema))

    def __repr__(self) -> str:
        return f"PostgresTraceStore({self.where!r}, schema={self.schema!r})"

    @property
    def location(self) -> str:
        return f"{self.where} (schema {self.schema})"

    @property
    def closed(self) -> bool:
        return self._closed

    def connects_to(self, dsn: str, schema: str) -> bool:
        """Whether this store is the one ``PostgresTraceStore(dsn, schema=schema)`` would open."""
        return dsn == self._dsn and schema == self.schema

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def write(self, spans: Sequence[SpanRecord]) -> None:
        rows = [_to_row(s) for s in spans]
        if not rows:
            return
        upsert = sql.SQL(
            "INSERT INTO {} (" + _COLUMNS + ") VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (trace_id, span_id) DO UPDATE SET parent_span_id = "
            "EXCLUDED.parent_span_id, name = EXCLUDED.name, kind = EXCLUDED.kind, "
            "start_ns = EXCLUDED.start_ns, end_ns = EXCLUDED.end_ns, status = EXCLUDED.status, "
            "status_message = EXCLUDED.status_message, attributes = EXCLUDED.attributes, "
            "events = EXCLUDED.events"
        ).format(self._table)

        def op(conn: Conn) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(upsert, rows)

        self._run("write spans to", op)

    def trace(self, trace_id: str) -> list[SpanRecord]:
        query = sql.SQL(
            "SELECT " + _COLUMNS + " FROM {} WHERE trace_id = %s "
            "ORDER BY start_ns, end_ns DESC, span_id"
        ).format(self._table)

        def op(conn: Conn) -> list[tuple[Any, ...]]:
            full = self._resolve(conn, trace_id)
            return conn.execute(query, (full,)).fetchall()

        return [_from_row(r) for r in self._run("read", op)]

    def traces(
        self,
        limit: int = 20,
        *,
        session: str | None = None,
        agent: str | None = None,
        errors: bool = False,
        search: str | None = None,
    ) -> list[TraceSummary]:
        if limit < 1:
            return []
        ids = self._recent_ids(limit, session=session, agent=agent, errors=errors, search=search)
        return self._summaries(ids)

    def trace_ids(self) -> list[str]:
        return self._recent_ids(None)

    def last_trace_id(self) -> str | None:
        ids = self._recent_ids(1)
        return ids[0] if ids else None

    def spans(self, since_ns: int | None = None) -> list[SpanRecord]:
        query = sql.SQL(
            "SELECT " + _COLUMNS + " FROM {t} WHERE trace_id IN (SELECT trace_id FROM {t} "
            "GROUP BY trace_id HAVING MIN(start_ns) >= %s) ORDER BY start_ns, span_id"
        ).format(t=self._table)
        rows = self._run("read", lambda c: c.execute(query, (since_ns or 0,)).fetchall())
        return [_from_row(r) for r in rows]

    def delete_older_than(self, seconds: float) -> int:
        if seconds < 0:
            raise ValueError(f"retention must be zero or more seconds, not {seconds}")
        cutoff = time.time_ns() - int(seconds * 1e9)
        query = sql.SQL(
            "DELETE FROM {t} WHERE trace_id IN (SELECT trace_id FROM {t} GROUP BY trace_id "
            "HAVING MAX(end_ns) < %s) RETURNING trace_id"
        ).format(t=self._table)

        def op(conn: Conn) -> int:
            with conn.transaction():
                return len({r[0] for r in conn.execute(query, (cutoff,)).fetchall()})

        return self._run("delete old traces from", op)

    def _summaries(self, ids: list[str]) -> list[TraceSummary]:
        if not ids:
            return []
        query = sql.SQL(
            "SELECT " + _COLUMNS + " FROM {} WHERE trace_id = ANY(%s) "
            "ORDER BY start_ns, end_ns DESC, span_id"
        ).format(self._table)
        rows = self._run("read", lambda c: c.execute(query, (ids,)).fetchall())
        by_trace: dict[str, list[SpanRecord]] = {i: [] for i in ids}
        for row in rows:
            record = _from_row(row)
            by_trace[record.trace_id].append(record)
        return [summarize_trace(by_trace[i]) for i in ids if by_trace[i]]

    def _recent_ids(
        self,
        limit: int | None,
        *,
        session: str | None = None,
        agent: str | None = None,
        errors: bool = False,
        search: str | None = None,
    ) -> list[str]:
        having: list[str] = []
        params: list[Any] = []
        attribute = "(attributes::json ->> %s)"
        if session is not None:
            having.append(f"bool_or({attribute} = %s)")
            params.extend([sc.GEN_AI_CONVERSATION_ID, session])
        if agent is not None:
            having.append(f"bool_or({attribute} = %s)")
            params.extend([sc.GEN_AI_AGENT_NAME, agent])
        if errors:
            having.append("bool_or(status = 'error')")
        if search:
            having.append(
                "bool_or(strpos(lower(name), %s) > 0 OR strpos(lower(attributes), %s) > 0 "
                "OR strpos(lower(status_message), %s) > 0)"
            )
            params.extend([search.lower()] * 3)
        text = "SELECT trace_id FROM {} GROUP BY trace_id"
        if having:
            text += " HAVING " + " AND ".join(having)
        text += " ORDER BY MIN(start_ns) DESC, trace_id LIMIT %s"
        params.append(limit)
        query = sql.SQL(text).format(self._table)
        rows = self._run("read", lambda c: c.execute(query, params).fetchall())
        return [r[0] for r in rows]

    def _resolve(self, conn: Conn, trace_id: str) -> str:
        """The full id of the one stored trace whose id starts with ``trace_id``."""
        wanted = trace_id.strip().lower()
        if not MIN_PREFIX <= len(wanted) <= 32 or not set(wanted) <= _HEX:
            raise StoreError(
                f"{trace_id!r} is not a trace id: give a trace id or its first "
                f"{MIN_PREFIX} or more hex characters",
                hint=_LIST_HINT,
            )
        # Ids that start with `wanted` are exactly those in [wanted, wanted + "g") in the "C"
        # collation: "g" sorts after every hex digit. The range uses the primary-key index.
        query = sql.SQL(
            "SELECT DISTINCT trace_id FROM {} WHERE trace_id >= %s AND trace_id < %s "
            "ORDER BY trace_id LIMIT 3"
        ).format(self._table)
        found: list[str] = [r[0] for r in conn.execute(query, (wanted, wanted + "g"))]
        if not found:
            raise StoreError(f"no trace {trace_id!r} in {self.location}", hint=_LIST_HINT)
        if len(found) > 1:
            shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
            raise StoreError(
                f"trace id prefix {trace_id!r} is ambiguous: it matches {shown}",
                hint="give more characters of the id",
            )
        return found[0]

    def _error(self, action: str, e: BaseException) -> StoreError:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        return StoreError(f"cannot {action} the PostgreSQL trace store {self.location}: {detail}")

    def _run(self, action: str, op: Callable[[Conn], _T]) -> _T:
        """Run ``op`` on the connection, reconnecting and retrying once if the link was lost."""
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise StoreError(f"the trace store {self.location} is closed")
                conn = self._connect()
                try:
                    return op(conn)
                except psycopg.OperationalError as e:
                    if attempt == 2 or not conn.closed:
                        raise self._error(action, e) from e
                    self._conn = None
                except psycopg.Error as e:
                    raise self._error(action, e) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> Conn:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name="keel-traces",
            )
        except psycopg.Error as e:
            raise self._error("connect to", e) from None
        if not self._schema_ready:
            try:
                self._create_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._schema_ready = True
        self._conn = conn
        return conn

    def _create_schema(self, conn: Conn) -> None:
        """Create the table if missing; concurrent creators wait on one advisory lock."""
        s = sql.Identifier(self.schema)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"keel:{self.schema}",))
                conn.execute(sql.SQL(_DDL).format(schema=s))
                row = conn.execute(
                    sql.SQL(
                        "SELECT version FROM {}.keel_schema_versions WHERE component = %s"
                    ).format(s),
                    (_COMPONENT,),
                ).fetchone()
                if row is None:
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {}.keel_schema_versions (component, version) "
                            "VALUES (%s, %s)"
                        ).format(s),
                        (_COMPONENT, SCHEMA_VERSION),
                    )
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(
                        f"the trace table in schema {self.schema!r} of {self.where} has version "
                        f"{row[0]}, newer than this Keel understands ({SCHEMA_VERSION})",
                        hint="upgrade keel, or use another schema",
                    )
        except psycopg.Error as e:
            raise self._error("create the table of", e) from e


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL characters; SQLite can. Keep the rest of the string."""
    return value.replace("\x00", "\ufffd")


def _to_row(s: SpanRecord) -> tuple[Any, ...]:
    events = [
        {"name": e.name, "time_ns": e.time_ns, "attributes": dict(e.attributes)} for e in s.events
    ]
    return (
        s.trace_id.lower(),
        s.span_id.lower(),
        s.parent_span_id.lower() if s.parent_span_id else None,
        _text(s.name),
        _text(s.kind),
        s.start_ns,
        s.end_ns,
        s.status,
        _text(s.status_message),
        json.dumps(dict(s.attributes), default=str),
        json.dumps(events, default=str),
    )


def _from_row(row: tuple[Any, ...]) -> SpanRecord:
    (trace_id, span_id, parent, name, kind, start, end, status, message, attrs, events) = row
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        start_ns=start,
        end_ns=end,
        kind=kind,
        status=status,
        status_message=message,
        attributes=json.loads(attrs),
        events=tuple(
            SpanEvent(name=e["name"], time_ns=e["time_ns"], attributes=e["attributes"])
            for e in json.loads(events)
        ),
    )
