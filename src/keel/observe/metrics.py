"""OpenTelemetry metrics derived from finished spans, and the processor that files spans under
their conversation.

Metrics are recorded where spans are recorded: ``SpanMetricsProcessor`` sits in the tracer
provider next to the exporters and turns each finished span into measurements, so no traced
layer needs a second instrumentation. Instruments, after the GenAI semantic conventions:

- ``gen_ai.client.token.usage`` (histogram, ``{token}``): tokens of each ``chat`` call, one point
  per side with ``gen_ai.token.type`` = ``input`` or ``output``;
- ``gen_ai.client.operation.duration`` (histogram, ``s``): duration of ``chat``, ``embeddings``,
  ``retrieval`` and ``invoke_agent`` spans, with ``error.type`` when they failed;
- ``keel.cost`` (counter, ``USD``): ``keel.cost.usd`` of priced ``chat`` calls;
- ``keel.tool.duration`` (histogram, ``s``): ``execute_tool`` spans, by tool;
- ``keel.errors`` (counter): failed spans, by operation and ``error.type``;
- ``keel.retries`` (counter): ``keel.retry`` events (a retried model call or graph node).

This module imports the OpenTelemetry SDK; ``setup_tracing`` loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from keel.observe import semconv as sc
from keel.observe.conversation import current_conversation_id

__all__ = ["ConversationSpanProcessor", "SpanMetricsProcessor"]

# Bucket boundaries the GenAI conventions advise for these two histograms.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
_TIMED_OPERATIONS = frozenset(
    {
        sc.OPERATION_CHAT,
        sc.OPERATION_EMBEDDINGS,
        sc.OPERATION_RETRIEVAL,
        sc.OPERATION_INVOKE_AGENT,
    }
)
_MODEL_KEYS = (
    sc.GEN_AI_OPERATION_NAME,
    sc.GEN_AI_PROVIDER_NAME,
    sc.GEN_AI_REQUEST_MODEL,
    sc.GEN_AI_RESPONSE_MODEL,
)


class ConversationSpanProcessor(SpanProcessor):
    """Stamps ``gen_ai.conversation.id`` on every span started inside a ``conversation`` scope."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        conversation_id = current_conversation_id()
        if conversation_id is not None and sc.GEN_AI_CONVERSATION_ID not in (span.attributes or {}):
            span.set_attribute(sc.GEN_AI_CONVERSATION_ID, conversation_id)


class SpanMetricsProcessor(SpanProcessor):
    """Records the metrics listed in the module docstring from each finished span.

    ``use(provider)`` points it at a meter provider (None: record nothing); ``setup_tracing``
    switches it the way it switches the span exporter.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instruments: _Instruments | None = None

    def use(self, provider: MeterProvider | None) -> None:
        with self._lock:
            self._instruments = None if provider is None else _Instruments(provider)

    def on_end(self, span: ReadableSpan) -> None:
        instruments = self._instruments
        if instruments is not None:
            instruments.record(span)


class _Instruments:
    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("keel.observe")
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used by a model call, by gen_ai.token.type (input or output).",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Duration of a GenAI operation (model call, retrieval, agent run).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(
            "keel.cost", unit="USD", description="Price of model calls, from the price table."
        )
        self.tool_duration = meter.create_histogram(
            "keel.tool.duration",
            unit="s",
            description="Duration of tool calls, by tool.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.errors = meter.create_counter(
            "keel.errors", unit="{error}", description="Spans that ended in an error."
        )
        self.retries = meter.create_counter(
            "keel.retries", unit="{retry}", description="Retries of model calls and graph nodes."
        )

    def record(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        operation = attributes.get(sc.GEN_AI_OPERATION_NAME)
        failed = span.status.status_code is StatusCode.ERROR
        error_type = attributes.get(sc.ERROR_TYPE) or (_exception_type(span) if failed else None)
        seconds = max(0, (span.end_time or 0) - (span.start_time or 0)) / 1e9
        if operation in _TIMED_OPERATIONS:
            labels = _labels(attributes, _MODEL_KEYS)
            if failed:
                labels[sc.ERROR_TYPE] = str(error_type)
            self.duration.record(seconds, labels)
        if operation == sc.OPERATION_CHAT:
            labels = _labels(attributes, _MODEL_KEYS)
            for key, side in (
                (sc.GEN_AI_USAGE_INPUT_TOKENS, "input"),
                (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "output"),
            ):
                count = attributes.get(key)
                if isinstance(count, int) and not isinstance(count, bool):
                    self.tokens.record(count, {**labels, sc.GEN_AI_TOKEN_TYPE: side})
            cost = attributes.get(sc.KEEL_COST_USD)
            if isinstance(cost, int | float) and not isinstance(cost, bool) and cost > 0:
                self.cost.add(float(cost), labels)
        elif operation == sc.OPERATION_EXECUTE_TOOL:
            labels = _labels(attributes, (sc.GEN_AI_TOOL_NAME,))
            if failed:
                labels[sc.ERROR_TYPE] = str(error_type)
            self.tool_duration.record(seconds, labels)
        if failed:
            self.errors.add(
                1,
                {
                    sc.GEN_AI_OPERATION_NAME: str(operation or "other"),
                    sc.ERROR_TYPE: str(error_type),
                },
            )
        retries = sum(1 for e in span.events if e.name == "keel.retry")
        if retries:
            self.retries.add(retries, {sc.GEN_AI_OPERATION_NAME: str(operation or "other")})


def _exception_type(span: ReadableSpan) -> str:
    """The type of the exception recorded on a failed span (OTel's ``exception`` event)."""
    for event in span.events:
        if event.name == "exception" and event.attributes:
            kind = event.attributes.get("exception.type")
            if isinstance(kind, str) and kind:
                return kind.rsplit(".", 1)[-1]
    return "error"


def _labels(attributes: Mapping[str, object], keys: tuple[str, ...]) -> dict[str, AttributeValue]:
    """The string attributes among ``keys``: low-cardinality labels for a measurement."""
    labels: dict[str, AttributeValue] = {}
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str):
            labels[key] = value
    return labels
