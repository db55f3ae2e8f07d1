"""setup_tracing with real OpenTelemetry SDK spans: what other layers record lands in the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import Span, SpanKind, StatusCode

from keel.errors import StoreError
from keel.observe import (
    SQLiteSpanExporter,
    SQLiteTraceStore,
    get_tracer,
    semconv,
    setup_tracing,
    shutdown_tracing,
)


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[SQLiteTraceStore]:
    store = setup_tracing(tmp_path / "data" / "traces.db")
    yield store
    shutdown_tracing()


def _trace_id(span: Span) -> str:
    return f"{span.get_span_context().trace_id:032x}"


def _span_id(span: Span) -> str:
    return f"{span.get_span_context().span_id:016x}"


def test_nested_spans_land_in_the_store_with_parent_links(traced: SQLiteTraceStore) -> None:
    tracer = trace.get_tracer("x")
    with tracer.start_as_current_span("invoke_agent helper") as root:
        root.set_attribute(semconv.GEN_AI_OPERATION_NAME, semconv.OPERATION_INVOKE_AGENT)
        root.set_attribute(semconv.GEN_AI_AGENT_NAME, "helper")
        with tracer.start_as_current_span("chat tiny") as chat:
            chat.set_attribute(semconv.GEN_AI_OPERATION_NAME, semconv.OPERATION_CHAT)
            chat.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, 45)
            chat.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 12)
            chat.set_attribute(semconv.GEN_AI_REQUEST_TEMPERATURE, 0.5)
            chat.set_attribute(semconv.GEN_AI_RESPONSE_FINISH_REASONS, ("stop",))
        with tracer.start_as_current_span("execute_tool search") as tool:
            tool.set_attribute(semconv.GEN_AI_TOOL_NAME, "search")
            with tracer.start_as_current_span("retrieval docs") as retrieval:
                retrieval.set_attribute("keel.hits", [1, 2, 3])

    trace_id = _trace_id(root)
    assert traced.last_trace_id() == trace_id
    spans = {s.name: s for s in traced.trace(trace_id)}
    assert list(spans) == [
        "invoke_agent helper",
        "chat tiny",
        "execute_tool search",
        "retrieval docs",
    ]
    assert spans["invoke_agent helper"].parent_span_id is None
    assert spans["chat tiny"].parent_span_id == _span_id(root)
    assert spans["execute_tool search"].parent_span_id == _span_id(root)
    assert spans["retrieval docs"].parent_span_id == _span_id(tool)
    assert spans["retrieval docs"].span_id == _span_id(retrieval)
    assert dict(spans["chat tiny"].attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 45,
        "gen_ai.usage.output_tokens": 12,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.response.finish_reasons": ["stop"],
    }
    assert spans["retrieval docs"].attributes["keel.hits"] == [1, 2, 3]
    assert spans["invoke_agent helper"].attributes["gen_ai.agent.name"] == "helper"
    assert all(s.status == "unset" and s.kind == "internal" for s in spans.values())
    root_record = spans["invoke_agent helper"]
    assert all(root_record.start_ns <= s.start_ns <= s.end_ns for s in spans.values())


def test_spans_are_on_disk_as_soon_as_they_end(traced: SQLiteTraceStore) -> None:
    tracer = get_tracer("x")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner"):
            pass
        # A separate connection, as another process would have, already sees the ended child.
        with SQLiteTraceStore(traced.path) as reader:
            assert [s.name for s in reader.trace(_trace_id(outer))] == ["inner"]
    with SQLiteTraceStore(traced.path) as reader:
        assert [s.name for s in reader.trace(_trace_id(outer))] == ["outer", "inner"]


def test_error_spans_are_stored_as_errors(traced: SQLiteTraceStore) -> None:
    tracer = trace.get_tracer("x")
    with tracer.start_as_current_span("execute_tool divide") as span:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError as e:
            span.record_exception(e)
            span.set_status(StatusCode.ERROR, "division by zero")
            span.set_attribute(semconv.ERROR_TYPE, type(e).__name__)
    with (
        pytest.raises(ValueError, match="bad input"),
        tracer.start_as_current_span("escaping") as escaping,
    ):
        raise ValueError("bad input")

    (stored,) = traced.trace(_trace_id(span))
    assert stored.status == "error"
    assert stored.status_message == "division by zero"
    assert stored.attributes["error.type"] == "ZeroDivisionError"
    (event,) = stored.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ZeroDivisionError"
    assert "division by zero" in str(event.attributes["exception.message"])

    (escaped,) = traced.trace(_trace_id(escaping))
    assert escaped.status == "error"
    assert "bad input" in escaped.status_message
    assert traced.summary(_trace_id(escaping)).status == "error"


def test_a_second_setup_with_another_path_sends_new_spans_there(tmp_path: Path) -> None:
    tracer = trace.get_tracer("x")
    first = setup_tracing(tmp_path / "one.db")
    try:
        with tracer.start_as_current_span("first run") as one:
            pass
        second = setup_tracing(tmp_path / "two.db")
        assert second is not first
        with tracer.start_as_current_span("second run") as two:
            pass
    finally:
        shutdown_tracing()

    # The previous store stays open for reading, and each file holds only its own trace.
    assert [s.name for s in first.trace(_trace_id(one))] == ["first run"]
    first.close()
    for path, kept, other in ((tmp_path / "one.db", one, two), (tmp_path / "two.db", two, one)):
        with SQLiteTraceStore(path) as store:
            assert store.last_trace_id() == _trace_id(kept)
            assert len(store.traces()) == 1
            with pytest.raises(StoreError, match="no trace"):
                store.trace(_trace_id(other))


def test_setup_again_with_the_same_path_returns_the_open_store(tmp_path: Path) -> None:
    try:
        store = setup_tracing(tmp_path / "traces.db")
        assert setup_tracing(tmp_path / "." / "traces.db") is store
    finally:
        shutdown_tracing()


def test_shutdown_stops_recording_and_closes_the_store(tmp_path: Path) -> None:
    store = setup_tracing(tmp_path / "traces.db")
    shutdown_tracing()
    with trace.get_tracer("x").start_as_current_span("after shutdown"):
        pass
    assert store.closed
    with pytest.raises(StoreError, match="closed"):
        store.last_trace_id()
    with SQLiteTraceStore(tmp_path / "traces.db") as reader:
        assert reader.last_trace_id() is None
    shutdown_tracing()  # a second call is harmless


def test_exporter_converts_values_to_json(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "traces.db")
    provider = TracerProvider()  # a private provider: the exporter works without setup_tracing
    provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(store)))
    with provider.get_tracer("x").start_as_current_span("values", kind=SpanKind.CLIENT) as span:
        span.set_attribute("nan", float("nan"))
        span.set_attribute("ints", (1, 2))
        span.set_attribute("flag", True)
    (stored,) = store.trace(_trace_id(span))
    assert dict(stored.attributes) == {"nan": "nan", "ints": [1, 2], "flag": True}
    assert stored.kind == "client"
    store.close()


def _ended_sdk_span(name: str) -> ReadableSpan:
    span = TracerProvider().get_tracer("x").start_span(name)
    span.end()
    assert isinstance(span, ReadableSpan)
    return span


def test_exporter_reports_failure_instead_of_raising(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "traces.db")
    exporter = SQLiteSpanExporter(store)
    span = _ended_sdk_span("late")
    store.close()
    assert exporter.export([span]) is SpanExportResult.FAILURE


def test_exporter_writes_nothing_after_shutdown(tmp_path: Path) -> None:
    with SQLiteTraceStore(tmp_path / "traces.db") as store:
        exporter = SQLiteSpanExporter(store)
        assert exporter.export([_ended_sdk_span("before")]) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert exporter.export([_ended_sdk_span("after")]) is SpanExportResult.FAILURE
        assert [s.root_name for s in store.traces()] == ["before"]
        assert not store.closed  # the exporter does not own the store
