"""What the trace store holds: span records, and the summary of a trace computed from them.

Plain frozen dataclasses with no dependency beyond the standard library, so the exporter, the
store, the renderer and tests all share them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from keel.observe import semconv as sc

__all__ = [
    "STEP_OPERATIONS",
    "AttributeValue",
    "Scalar",
    "SpanEvent",
    "SpanRecord",
    "SpanStatus",
    "TraceSummary",
    "summarize_trace",
]

Scalar = str | bool | int | float
AttributeValue = Scalar | Sequence[Scalar]
"""A span attribute value as OpenTelemetry allows it: a scalar or a homogeneous sequence."""
SpanStatus = Literal["ok", "error", "unset"]

STEP_OPERATIONS = frozenset({sc.OPERATION_CHAT, sc.OPERATION_EXECUTE_TOOL, sc.OPERATION_RETRIEVAL})
"""The ``gen_ai.operation.name`` values that count as steps of a trace."""


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """Something that happened at one moment of a span, such as a recorded exception."""

    name: str
    time_ns: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span as the store keeps it: ids in lowercase hex, times in Unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    kind: str = "internal"
    status: SpanStatus = "unset"
    status_message: str = ""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def operation(self) -> str | None:
        """The span's ``gen_ai.operation.name``, if it has one."""
        value = self.attributes.get(sc.GEN_AI_OPERATION_NAME)
        return value if isinstance(value, str) else None

    def float_attribute(self, key: str) -> float | None:
        """A numeric attribute as a float, or None when it is absent or not a number."""
        value = self.attributes.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def int_attribute(self, key: str) -> int | None:
        """An integer attribute, or None when it is absent or not an integer."""
        value = self.attributes.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """What one trace did and cost, for a one-line listing or the summary after a run.

    ``steps`` counts the units of agent work: model calls (``chat`` spans), tool calls
    (``execute_tool`` spans) and retrievals (``retrieval`` spans), i.e. the spans whose
    ``gen_ai.operation.name`` is in ``STEP_OPERATIONS``. Spans that only group work (the agent run,
    graph nodes, ingestion) are not steps. Tokens are summed over ``chat`` spans from
    ``gen_ai.usage.input_tokens`` and ``gen_ai.usage.output_tokens``, cost over ``chat`` spans from
    ``keel.cost.usd``. ``conversation_id`` (the session) and ``agent_name`` are the first found,
    the root span's first. ``status`` is ``"error"``
    when the root span failed; ``errors`` counts every failed span, including tool calls whose
    error went back to the model and did not end the run.
    """

    trace_id: str
    root_name: str
    start_ns: int
    wall_time_s: float
    span_count: int
    steps: int
    model_calls: int
    tool_calls: int
    retrievals: int
    input_tokens: int
    output_tokens: int
    status: Literal["ok", "error"]
    errors: int
    cost_usd: float = 0.0
    conversation_id: str | None = None
    agent_name: str | None = None

    @property
    def started_at(self) -> datetime:
        """When the trace started (its earliest span), in UTC."""
        return datetime.fromtimestamp(self.start_ns / 1e9, tz=UTC)


def summarize_trace(spans: Sequence[SpanRecord]) -> TraceSummary:
    """Summarize the spans of one trace. The root is the earliest span whose parent is absent
    (its parent may be remote, or still running when the trace is read)."""
    if not spans:
        raise ValueError("a trace summary needs at least one span")
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_span_id is None or s.parent_span_id not in ids]
    root = min(roots, key=lambda s: (s.start_ns, -s.end_ns))
    chats = [s for s in spans if s.operation == sc.OPERATION_CHAT]
    start = min(s.start_ns for s in spans)
    return TraceSummary(
        trace_id=root.trace_id,
        root_name=root.name,
        start_ns=start,
        wall_time_s=max(0, max(s.end_ns for s in spans) - start) / 1e9,
        span_count=len(spans),
        steps=sum(1 for s in spans if s.operation in STEP_OPERATIONS),
        model_calls=len(chats),
        tool_calls=sum(1 for s in spans if s.operation == sc.OPERATION_EXECUTE_TOOL),
        retrievals=sum(1 for s in spans if s.operation == sc.OPERATION_RETRIEVAL),
        input_tokens=sum(s.int_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS) or 0 for s in chats),
        output_tokens=sum(s.int_attribute(sc.GEN_AI_USAGE_OUTPUT_TOKENS) or 0 for s in chats),
        status="error" if root.status == "error" else "ok",
        errors=sum(1 for s in spans if s.status == "error"),
        cost_usd=sum(s.float_attribute(sc.KEEL_COST_USD) or 0.0 for s in chats),
        conversation_id=_first_text(spans, root, sc.GEN_AI_CONVERSATION_ID),
        agent_name=_first_text(
            [s for s in spans if s.operation == sc.OPERATION_INVOKE_AGENT],
            None,
            sc.GEN_AI_AGENT_NAME,
        ),
    )


def _first_text(spans: Sequence[SpanRecord], first: SpanRecord | None, key: str) -> str | None:
    """The string attribute ``key`` of ``first``, else of the earliest span that has it."""
    for span in ([first] if first is not None else []) + sorted(spans, key=lambda s: s.start_ns):
        value = span.attributes.get(key)
        if isinstance(value, str):
            return value
    return None
