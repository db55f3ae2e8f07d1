"""Stored traces as files: Keel's own JSON, or OTLP/JSON that any OpenTelemetry tool reads.

``otlp-json`` follows the OTLP/JSON encoding of an ``ExportTraceServiceRequest`` (trace and span
ids in lowercase hex, 64-bit integers and nanosecond times as strings, enums as numbers), so a
file can be POSTed to a collector's ``/v1/traces`` with ``Content-Type: application/json``.
Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from keel.observe.records import AttributeValue, SpanRecord, summarize_trace

__all__ = ["ExportFormat", "dumps", "to_json", "to_otlp_json"]

ExportFormat = Literal["json", "otlp-json"]

_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_STATUS = {"unset": 0, "ok": 1, "error": 2}


def to_json(traces: Iterable[Sequence[SpanRecord]]) -> dict[str, Any]:
    """``{"traces": [{"trace_id", "summary", "spans": [...]}]}``, every field of every span."""
    out: list[dict[str, Any]] = []
    for spans in traces:
        if not spans:
            continue
        summary = summarize_trace(spans)
        out.append(
            {
                "trace_id": summary.trace_id,
                "summary": {
                    "root_name": summary.root_name,
                    "start_ns": summary.start_ns,
                    "wall_time_s": summary.wall_time_s,
                    "span_count": summary.span_count,
                    "steps": summary.steps,
                    "model_calls": summary.model_calls,
                    "tool_calls": summary.tool_calls,
                    "retrievals": summary.retrievals,
                    "input_tokens": summary.input_tokens,
                    "output_tokens": summary.output_tokens,
                    "cost_usd": summary.cost_usd,
                    "status": summary.status,
                    "errors": summary.errors,
                    "conversation_id": summary.conversation_id,
                    "agent_name": summary.agent_name,
                },
                "spans": [_span_json(s) for s in spans],
            }
        )
    return {"traces": out}


def to_otlp_json(
    traces: Iterable[Sequence[SpanRecord]], *, service_name: str = "keel"
) -> dict[str, Any]:
    """One OTLP/JSON ``ExportTraceServiceRequest`` holding every span of ``traces``."""
    spans = [_otlp_span(s) for trace in traces for s in trace]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_kv("service.name", service_name)]},
                "scopeSpans": [{"scope": {"name": "keel.observe.export"}, "spans": spans}],
            }
        ]
    }


def dumps(data: dict[str, Any]) -> str:
    """JSON text of an export, indented, non-ASCII kept."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _span_json(s: SpanRecord) -> dict[str, Any]:
    return {
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "name": s.name,
        "kind": s.kind,
        "start_ns": s.start_ns,
        "end_ns": s.end_ns,
        "duration_ms": s.duration_ns / 1e6,
        "status": s.status,
        "status_message": s.status_message,
        "attributes": dict(s.attributes),
        "events": [
            {"name": e.name, "time_ns": e.time_ns, "attributes": dict(e.attributes)}
            for e in s.events
        ],
    }


def _otlp_span(s: SpanRecord) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": s.trace_id,
        "spanId": s.span_id,
        "name": s.name,
        "kind": _KINDS.get(s.kind, 1),
        "startTimeUnixNano": str(s.start_ns),
        "endTimeUnixNano": str(s.end_ns),
        "attributes": [_kv(k, v) for k, v in s.attributes.items()],
        "events": [
            {
                "timeUnixNano": str(e.time_ns),
                "name": e.name,
                "attributes": [_kv(k, v) for k, v in e.attributes.items()],
            }
            for e in s.events
        ],
        "status": {"code": _STATUS[s.status], "message": s.status_message},
    }
    if s.parent_span_id:
        span["parentSpanId"] = s.parent_span_id
    return span


def _kv(key: str, value: AttributeValue) -> dict[str, Any]:
    return {"key": key, "value": _any_value(value)}


def _any_value(value: AttributeValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"arrayValue": {"values": [_any_value(v) for v in value]}}
