"""Aggregates over the local trace store: the same figures as the OpenTelemetry metrics, read
back from stored spans (``keel trace stats``), for a machine with no metrics backend.

Per operation (``chat``, ``execute_tool``, ``retrieval``, ``invoke_agent``, graph ``node``
spans): how many, how many failed, latency percentiles; per model: tokens and cost; per tool:
calls, failures and latency; retries (``keel.retry`` events). Standard library only.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from keel.observe import semconv as sc
from keel.observe.records import SpanRecord

__all__ = ["LatencyStats", "StoreStats", "compute_stats"]


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Calls, failures and latency (milliseconds) of one group of spans."""

    count: int
    errors: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    total_ms: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What ``compute_stats`` found: see the module docstring."""

    traces: int
    spans: int
    failed_traces: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    retries: int
    by_operation: dict[str, LatencyStats] = field(default_factory=dict)
    by_model: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    """model -> (input tokens, output tokens, cost in USD)."""
    by_tool: dict[str, LatencyStats] = field(default_factory=dict)


def compute_stats(spans: Sequence[SpanRecord]) -> StoreStats:
    """Aggregate ``spans`` (of any number of traces)."""
    operations: defaultdict[str, list[SpanRecord]] = defaultdict(list)
    tools: defaultdict[str, list[SpanRecord]] = defaultdict(list)
    models: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    traces: dict[str, bool] = {}
    retries = 0
    for s in spans:
        traces[s.trace_id] = traces.get(s.trace_id, False) or s.status == "error"
        retries += sum(1 for e in s.events if e.name == "keel.retry")
        operation = s.operation or ("node" if sc.KEEL_GRAPH_NODE in s.attributes else None)
        if operation is None:
            continue
        operations[operation].append(s)
        if operation == sc.OPERATION_EXECUTE_TOOL:
            name = s.attributes.get(sc.GEN_AI_TOOL_NAME)
            tools[str(name) if name is not None else s.name].append(s)
        elif operation == sc.OPERATION_CHAT:
            model = s.attributes.get(sc.GEN_AI_REQUEST_MODEL)
            totals = models[str(model) if model is not None else "?"]
            totals[0] += s.int_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS) or 0
            totals[1] += s.int_attribute(sc.GEN_AI_USAGE_OUTPUT_TOKENS) or 0
            totals[2] += s.float_attribute(sc.KEEL_COST_USD) or 0.0
    by_model = {m: (int(t[0]), int(t[1]), float(t[2])) for m, t in sorted(models.items())}
    return StoreStats(
        traces=len(traces),
        spans=len(spans),
        failed_traces=sum(traces.values()),
        input_tokens=sum(t[0] for t in by_model.values()),
        output_tokens=sum(t[1] for t in by_model.values()),
        cost_usd=sum(t[2] for t in by_model.values()),
        retries=retries,
        by_operation={k: _latency(v) for k, v in sorted(operations.items())},
        by_model=by_model,
        by_tool={k: _latency(v) for k, v in sorted(tools.items())},
    )


def _latency(spans: Iterable[SpanRecord]) -> LatencyStats:
    group = list(spans)
    durations = sorted(s.duration_ns / 1e6 for s in group)
    return LatencyStats(
        count=len(group),
        errors=sum(1 for s in group if s.status == "error"),
        p50_ms=_percentile(durations, 0.50),
        p95_ms=_percentile(durations, 0.95),
        max_ms=durations[-1] if durations else 0.0,
        total_ms=sum(durations),
    )


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))
    return ordered[min(len(ordered), rank) - 1]
