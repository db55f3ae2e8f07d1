"""Observability: where OpenTelemetry spans go, and how they are read back.

Other layers create spans through the OpenTelemetry API only, with the attribute names in
``keel.observe.semconv``; this package sends them to a local SQLite trace store and/or over OTLP
(``setup_tracing``), files them under their conversation (``conversation``), derives metrics from
them, captures message content only on request and redacted (``keel.observe.content``), and
renders stored traces for a terminal (``keel trace``) or a browser (``keel ui``). Names are
imported on first use, so ``import keel.observe`` loads neither the OpenTelemetry SDK nor rich nor
SQLite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports
from keel.observe import semconv

if TYPE_CHECKING:
    from keel.observe.base import TraceStore, open_trace_store
    from keel.observe.content import set_capture_content
    from keel.observe.conversation import conversation, current_conversation_id
    from keel.observe.exporter import SQLiteSpanExporter
    from keel.observe.otlp import OTLPConfig
    from keel.observe.postgres import PostgresTraceStore
    from keel.observe.records import SpanEvent, SpanRecord, TraceSummary, summarize_trace
    from keel.observe.render import render_summary, render_trace
    from keel.observe.store import SQLiteTraceStore
    from keel.observe.tracing import force_flush, get_tracer, setup_tracing, shutdown_tracing

__all__ = [
    "OTLPConfig",
    "PostgresTraceStore",
    "TraceStore",
    "conversation",
    "current_conversation_id",
    "force_flush",
    "set_capture_content",
    "SQLiteSpanExporter",
    "SQLiteTraceStore",
    "SpanEvent",
    "SpanRecord",
    "TraceSummary",
    "get_tracer",
    "open_trace_store",
    "render_summary",
    "render_trace",
    "semconv",
    "setup_tracing",
    "shutdown_tracing",
    "summarize_trace",
]

_WHERE = {
    "OTLPConfig": "keel.observe.otlp",
    "PostgresTraceStore": "keel.observe.postgres",
    "TraceStore": "keel.observe.base",
    "open_trace_store": "keel.observe.base",
    "conversation": "keel.observe.conversation",
    "current_conversation_id": "keel.observe.conversation",
    "force_flush": "keel.observe.tracing",
    "set_capture_content": "keel.observe.content",
    "SQLiteSpanExporter": "keel.observe.exporter",
    "SQLiteTraceStore": "keel.observe.store",
    "SpanEvent": "keel.observe.records",
    "SpanRecord": "keel.observe.records",
    "TraceSummary": "keel.observe.records",
    "get_tracer": "keel.observe.tracing",
    "render_summary": "keel.observe.render",
    "render_trace": "keel.observe.render",
    "setup_tracing": "keel.observe.tracing",
    "shutdown_tracing": "keel.observe.tracing",
    "summarize_trace": "keel.observe.records",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
