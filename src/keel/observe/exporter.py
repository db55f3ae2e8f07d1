"""``SQLiteSpanExporter``: the OpenTelemetry SDK exporter that writes spans to the local store.

This module imports the OpenTelemetry SDK, so ``keel.observe`` imports it only when tracing is set
up or an exporter is asked for by name.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import Attributes

from keel.errors import StoreError
from keel.observe.base import TraceStore
from keel.observe.records import AttributeValue, Scalar, SpanEvent, SpanRecord, SpanStatus

__all__ = ["SQLiteSpanExporter", "SwitchingSpanExporter", "to_span_record"]

logger = logging.getLogger("keel.observe")

_STATUS: dict[StatusCode, SpanStatus] = {
    StatusCode.OK: "ok",
    StatusCode.ERROR: "error",
    StatusCode.UNSET: "unset",
}


class SQLiteSpanExporter(SpanExporter):
    """Writes each batch of finished spans to a ``TraceStore`` (SQLite or PostgreSQL) at once.

    The store belongs to whoever opened it: shutting the exporter down stops writes but does not
    close the store, which may still be read.
    """

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self._stopped = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        try:
            self.store.write([to_span_record(s) for s in spans])
        except StoreError as e:
            # An exporter must not raise into the code that ended the span; a lost span is logged.
            logger.warning("dropped %d span(s): %s", len(spans), e)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._stopped = True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # every export is written before it returns


class SwitchingSpanExporter(SpanExporter):
    """Forwards spans to whichever exporter is current, and drops them while there is none.

    ``setup_tracing`` installs one of these behind the process's span processor, because a global
    tracer provider cannot be replaced: switching the target is how tracing moves to another file.
    """

    def __init__(self) -> None:
        # Held during an export, so that a switch waits for spans already on their way.
        self._lock = threading.Lock()
        self._target: SpanExporter | None = None

    def switch(self, target: SpanExporter | None) -> SpanExporter | None:
        """Send later spans to ``target`` (None: drop them); return the previous target."""
        with self._lock:
            previous, self._target = self._target, target
        return previous

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._target is None:
                return SpanExportResult.SUCCESS
            return self._target.export(spans)

    def shutdown(self) -> None:
        previous = self.switch(None)
        if previous is not None:
            previous.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            return self._target is None or self._target.force_flush(timeout_millis)


def to_span_record(span: ReadableSpan) -> SpanRecord:
    """Convert a finished SDK span to the store's record, with JSON-safe attribute values."""
    context = span.get_span_context()
    if context is None:
        raise ValueError(f"span {span.name!r} has no span context")
    start = span.start_time or 0
    return SpanRecord(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_span_id=f"{span.parent.span_id:016x}" if span.parent is not None else None,
        name=span.name,
        start_ns=start,
        end_ns=span.end_time if span.end_time is not None else start,
        kind=span.kind.name.lower(),
        status=_STATUS[span.status.status_code],
        status_message=span.status.description or "",
        attributes=_json_attributes(span.attributes),
        events=tuple(
            SpanEvent(name=e.name, time_ns=e.timestamp, attributes=_json_attributes(e.attributes))
            for e in span.events
        ),
    )


def _json_attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    if not attributes:
        return {}
    return {key: _json_value(value) for key, value in attributes.items()}


def _json_value(value: object) -> AttributeValue:
    """OTel values are scalars or sequences of them; tuples become lists, and what JSON cannot
    hold (NaN, infinities, bytes, anything else) becomes its string form."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        return _json_scalar(value)
    return [_json_scalar(v) for v in value]


def _json_scalar(value: object) -> Scalar:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
