"""The local trace store: finished spans in one SQLite file, read back as traces and summaries.

The span exporter writes each span as it ends; ``keel trace`` reads the file, possibly while an
agent in another process is still writing to it (WAL mode allows one writer and many readers).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from keel.errors import StoreError
from keel.observe import semconv as sc
from keel.observe.base import MIN_PREFIX, TraceStore
from keel.observe.records import SpanEvent, SpanRecord, TraceSummary, summarize_trace

__all__ = ["MIN_PREFIX", "SQLiteTraceStore"]

SCHEMA_VERSION = 1
# _MIGRATIONS[v] upgrades a file at PRAGMA user_version v to v + 1, in one transaction.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE spans (
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_span_id TEXT,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'unset')),
            status_message TEXT NOT NULL DEFAULT '',
            attributes TEXT NOT NULL DEFAULT '{}',
            events TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (trace_id, span_id)
        )""",
        "CREATE INDEX spans_by_trace_start ON spans (trace_id, start_ns)",
    ),
)
_COLUMNS = (
    "trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status, status_message, "
    "attributes, events"
)
_HEX = frozenset("0123456789abcdef")
_LIST_HINT = "list recent traces with: keel trace list"


class SQLiteTraceStore(TraceStore):
    """Spans of many traces in one SQLite file, safe to share between threads.

    A trace is addressed by its 32-character hex id or by a prefix of at least ``MIN_PREFIX``
    characters. A trace starts when its earliest span starts; "last" and "recent" use that time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (see _transaction).
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the trace store {self.path}: {e}") from e
        self._conn: sqlite3.Connection | None = conn
        try:
            self._prepare()
        except BaseException:
            conn.close()
            self._conn = None
            raise

    def __repr__(self) -> str:
        return f"SQLiteTraceStore({str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the file; later calls raise StoreError. Closing twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def write(self, spans: Sequence[SpanRecord]) -> None:
        """Insert spans in one transaction; a span written again (same ids) replaces the old."""
        rows = [_to_row(s) for s in spans]
        if not rows:
            return
        with self._session("write spans to") as conn, _transaction(conn):
            conn.executemany(
                f"INSERT OR REPLACE INTO spans ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows
            )

    def last_trace_id(self) -> str | None:
        """The id of the trace that started last, or None when the store is empty."""
        ids = self._recent_ids(1)
        return ids[0] if ids else None

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """All spans of one trace, ordered by start (an enclosing span before what it encloses)."""
        with self._session("read") as conn:
            full = self._resolve(conn, trace_id)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM spans WHERE trace_id = ? "
                "ORDER BY start_ns, end_ns DESC, span_id",
                (full,),
            ).fetchall()
        return [_from_row(r) for r in rows]

    def summary(self, trace_id: str) -> TraceSummary:
        """The summary of one trace (see ``TraceSummary`` for what each count means)."""
        return summarize_trace(self.trace(trace_id))

    def traces(
        self,
        limit: int = 20,
        *,
        session: str | None = None,
        agent: str | None = None,
        errors: bool = False,
        search: str | None = None,
    ) -> list[TraceSummary]:
        """Summaries of the ``limit`` most recent traces, newest first.

        Filters narrow the list to traces with a span whose ``gen_ai.conversation.id`` is
        ``session``, a span whose ``gen_ai.agent.name`` is ``agent``, at least one failed span
        (``errors``), or a span whose name, attributes or status message contain ``search``
        (case-insensitive).
        """
        if limit < 1:
            return []
        ids = self._recent_ids(limit, session=session, agent=agent, errors=errors, search=search)
        return self._summaries(ids)

    def trace_ids(self) -> list[str]:
        """Every stored trace id, newest first."""
        return self._recent_ids(None)

    def spans(self, since_ns: int | None = None) -> list[SpanRecord]:
        """Every stored span (of traces that started at or after ``since_ns``), in start order."""
        with self._session("read") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM spans WHERE trace_id IN (SELECT trace_id FROM spans "
                "GROUP BY trace_id HAVING MIN(start_ns) >= ?) ORDER BY start_ns, span_id",
                (since_ns or 0,),
            ).fetchall()
        return [_from_row(r) for r in rows]

    def _summaries(self, ids: list[str]) -> list[TraceSummary]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._session("read") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM spans WHERE trace_id IN ({marks}) "
                "ORDER BY start_ns, end_ns DESC, span_id",
                ids,
            ).fetchall()
        by_trace: dict[str, list[SpanRecord]] = {i: [] for i in ids}
        for row in rows:
            record = _from_row(row)
            by_trace[record.trace_id].append(record)
        return [summarize_trace(by_trace[i]) for i in ids if by_trace[i]]

    def delete_older_than(self, seconds: float) -> int:
        """Delete every trace whose last span ended more than ``seconds`` ago; return how many.

        Whole traces go or stay: a trace still being written to is never cut in half.
        """
        if seconds < 0:
            raise ValueError(f"retention must be zero or more seconds, not {seconds}")
        cutoff = time.time_ns() - int(seconds * 1e9)
        with self._session("delete old traces from") as conn, _transaction(conn):
            old = [
                r[0]
                for r in conn.execute(
                    "SELECT trace_id FROM spans GROUP BY trace_id HAVING MAX(end_ns) < ?",
                    (cutoff,),
                )
            ]
            conn.executemany("DELETE FROM spans WHERE trace_id = ?", [(i,) for i in old])
        return len(old)

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
        if session is not None:
            having.append(f"SUM({_attribute(sc.GEN_AI_CONVERSATION_ID)} = ?)")
            params.append(session)
        if agent is not None:
            having.append(f"SUM({_attribute(sc.GEN_AI_AGENT_NAME)} = ?)")
            params.append(agent)
        if errors:
            having.append("SUM(status = 'error')")
        if search:
            having.append(
                "SUM(instr(lower(name), ?) OR instr(lower(attributes), ?) "
                "OR instr(lower(status_message), ?))"
            )
            params.extend([search.lower()] * 3)
        sql = "SELECT trace_id FROM spans GROUP BY trace_id"
        if having:
            sql += " HAVING " + " AND ".join(f"{h} > 0" for h in having)
        sql += " ORDER BY MIN(start_ns) DESC, trace_id LIMIT ?"
        params.append(-1 if limit is None else limit)
        with self._session("read") as conn:
            rows = conn.execute(sql, params).fetchall()
        return [r[0] for r in rows]

    def _resolve(self, conn: sqlite3.Connection, trace_id: str) -> str:
        """The full id of the one stored trace whose id starts with ``trace_id``."""
        wanted = trace_id.strip().lower()
        if not MIN_PREFIX <= len(wanted) <= 32 or not set(wanted) <= _HEX:
            raise StoreError(
                f"{trace_id!r} is not a trace id: give a trace id or its first "
                f"{MIN_PREFIX} or more hex characters",
                hint=_LIST_HINT,
            )
        # Ids that start with `wanted` are exactly those in [wanted, wanted + "g"): "g" sorts
        # after every hex digit. The range uses the primary-key index, unlike LIKE.
        found: list[str] = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT trace_id FROM spans WHERE trace_id >= ? AND trace_id < ? "
                "ORDER BY trace_id LIMIT 3",
                (wanted, wanted + "g"),
            )
        ]
        if not found:
            raise StoreError(f"no trace {trace_id!r} in {self.path}", hint=_LIST_HINT)
        if len(found) > 1:
            shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
            raise StoreError(
                f"trace id prefix {trace_id!r} is ambiguous: it matches {shown}",
                hint="give more characters of the id",
            )
        return found[0]

    @contextmanager
    def _session(self, action: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock, and turn SQLite failures into StoreError naming the file."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"the trace store {self.path} is closed")
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise StoreError(f"cannot {action} the trace store {self.path}: {e}") from e

    def _prepare(self) -> None:
        """Set up WAL mode and bring the schema to SCHEMA_VERSION."""
        with self._session("open") as c:
            c.execute("PRAGMA busy_timeout = 5000")
            c.execute("PRAGMA journal_mode = WAL")
            c.execute("PRAGMA synchronous = NORMAL")
            with _transaction(c):
                # Read inside the write transaction: another process may be migrating too.
                version: int = c.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"the trace store {self.path} has schema version {version}, newer than "
                        f"this Keel understands ({SCHEMA_VERSION})",
                        hint="upgrade keel, or use another data directory",
                    )
                for v in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[v]:
                        c.execute(statement)
                    c.execute(f"PRAGMA user_version = {v + 1}")


def _attribute(key: str) -> str:
    """SQL for the value of attribute ``key`` of a span row (keys hold dots, so they are quoted)."""
    return f"json_extract(attributes, '$.\"{key}\"')"


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back, e.g. on a full disk
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _to_row(s: SpanRecord) -> tuple[Any, ...]:
    events = [
        {"name": e.name, "time_ns": e.time_ns, "attributes": dict(e.attributes)} for e in s.events
    ]
    return (
        s.trace_id.lower(),
        s.span_id.lower(),
        s.parent_span_id.lower() if s.parent_span_id else None,
        s.name,
        s.kind,
        s.start_ns,
        s.end_ns,
        s.status,
        s.status_message,
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
