"""``TraceStore``: what the exporter writes finished spans to and ``keel trace``/``keel ui`` read.

Two backends implement it: ``SQLiteTraceStore`` (one local file, the default) and
``PostgresTraceStore`` (shared by every process of a scale-out deployment, ``trace.dsn``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from keel.observe.records import SpanRecord, TraceSummary, summarize_trace

if TYPE_CHECKING:
    from keel.config import TraceSettings

__all__ = ["MIN_PREFIX", "TraceStore", "open_trace_store"]

MIN_PREFIX = 6
"""The fewest hex characters of a trace id that ``trace()`` and ``summary()`` accept."""


class TraceStore(ABC):
    """Spans of many traces, safe to share between threads.

    A trace is addressed by its 32-character hex id or by a prefix of at least ``MIN_PREFIX``
    characters; an unknown, ambiguous or malformed id raises ``StoreError``. A trace starts when
    its earliest span starts; "last" and "recent" use that time. Every failure of the backend is
    a ``StoreError``, and so is any use after ``close()``.
    """

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the spans are, for messages (a path, or a database address without password)."""

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    @abstractmethod
    def close(self) -> None:
        """Release the backend; later calls raise StoreError. Closing twice is harmless."""

    @abstractmethod
    def write(self, spans: Sequence[SpanRecord]) -> None:
        """Store spans atomically; a span written again (same ids) replaces the old one."""

    @abstractmethod
    def trace(self, trace_id: str) -> list[SpanRecord]:
        """All spans of one trace, ordered by start (an enclosing span before what it encloses)."""

    @abstractmethod
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

    @abstractmethod
    def trace_ids(self) -> list[str]:
        """Every stored trace id, newest first."""

    @abstractmethod
    def spans(self, since_ns: int | None = None) -> list[SpanRecord]:
        """Every stored span (of traces that started at or after ``since_ns``), in start order."""

    @abstractmethod
    def delete_older_than(self, seconds: float) -> int:
        """Delete every trace whose last span ended more than ``seconds`` ago; return how many.

        Whole traces go or stay: a trace still being written to is never cut in half.
        """

    def last_trace_id(self) -> str | None:
        """The id of the trace that started last, or None when the store is empty."""
        found = self.traces(1)
        return found[0].trace_id if found else None

    def summary(self, trace_id: str) -> TraceSummary:
        """The summary of one trace (see ``TraceSummary`` for what each count means)."""
        return summarize_trace(self.trace(trace_id))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_trace_store(settings: TraceSettings, path: Path) -> TraceStore:
    """The store the ``[trace]`` settings name: PostgreSQL when ``trace.dsn`` (or ``dsn_env``)
    is set, else the SQLite file at ``path``."""
    dsn = settings.resolve_dsn()
    if dsn:
        from keel.observe.postgres import PostgresTraceStore

        return PostgresTraceStore(dsn, schema=settings.pg_schema)
    from keel.observe.store import SQLiteTraceStore

    return SQLiteTraceStore(path)
