"""Observability: where OpenTelemetry spans go, and how they are read back.

Other layers create spans through the OpenTelemetry API only, with the attribute names in
``keel.observe.semconv``; this package sends them to a local SQLite trace store
(``setup_tracing``) and renders stored traces for a terminal. Names are imported on first use, so
``import keel.observe`` loads neither the OpenTelemetry SDK nor rich nor SQLite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports
from keel.observe import semconv

if TYPE_CHECKING:
    from keel.observe.exporter import SQLiteSpanExporter
    from keel.observe.records import SpanEvent, SpanRecord, TraceSummary, summarize_trace
    from keel.observe.render import render_summary, render_trace
    from keel.observe.store import SQLiteTraceStore
    from keel.observe.tracing import get_tracer, setup_tracing, shutdown_tracing

__all__ = [
    "SQLiteSpanExporter",
    "SQLiteTraceStore",
    "SpanEvent",
    "SpanRecord",
    "TraceSummary",
    "get_tracer",
    "render_summary",
    "render_trace",
    "semconv",
    "setup_tracing",
    "shutdown_tracing",
    "summarize_trace",
]

_WHERE = {
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
