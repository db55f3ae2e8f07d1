"""The behaviour every ``TraceStore`` backend must have, run against SQLite and PostgreSQL.

A backend's test module subclasses ``TraceStoreConformance`` and provides two fixtures: ``store``
(an empty, open store) and ``reopen`` (a function opening another store on the same data, as
another process would).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from keel.errors import StoreError
from keel.observe import SpanEvent, SpanRecord, TraceStore
from keel.observe.records import AttributeValue, SpanStatus

MS = 1_000_000
DAY_NS = 86_400 * 1_000_000_000
OPERATIONS = {"chat", "execute_tool", "retrieval", "embeddings", "invoke_agent"}
AGENT_TRACE = "ab" * 16


def span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    start_ms: int,
    duration_ms: int,
    *,
    t0: int = 0,
    status: SpanStatus = "unset",
    attributes: dict[str, AttributeValue] | None = None,
    tokens: tuple[int, int] | None = None,
) -> SpanRecord:
    """A hand-built span; its operation is the first word of its name, as in Keel's spans."""
    attrs: dict[str, AttributeValue] = dict(attributes or {})
    if name.split()[0] in OPERATIONS:
        attrs["gen_ai.operation.name"] = name.split()[0]
    if tokens is not None:
        attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"] = tokens
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        start_ns=t0 + start_ms * MS,
        end_ns=t0 + (start_ms + duration_ms) * MS,
        status=status,
        attributes=attrs,
    )


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def agent_trace() -> list[SpanRecord]:
    t = AGENT_TRACE
    return [
        span(t, sid(1), None, "invoke_agent helper", 0, 1000),
        span(t, sid(2), sid(1), "graph node plan", 1, 998),
        span(t, sid(3), sid(2), "retrieval docs", 10, 20),
        span(t, sid(4), sid(2), "chat tiny", 40, 300, tokens=(100, 20)),
        span(t, sid(5), sid(2), "execute_tool divide", 370, 10, status="error"),
        span(t, sid(6), sid(2), "chat tiny", 400, 500, tokens=(150, 30)),
    ]


class TraceStoreConformance:
    """Subclass it and provide the ``store`` and ``reopen`` fixtures."""

    def test_round_trip_keeps_every_field(self, store: TraceStore) -> None:
        record = SpanRecord(
            trace_id="AB" * 16,
            span_id="cd" * 8,
            parent_span_id="EF" * 8,
            name="execute_tool search é",
            start_ns=1_000,
            end_ns=5_000,
            kind="client",
            status="error",
            status_message="timed out",
            attributes={"gen_ai.tool.name": "search", "scores": [0.5, 0.25], "ok": False, "n": 3},
            events=(SpanEvent("exception", 4_000, {"exception.type": "TimeoutError"}),),
        )
        store.write([record])
        (back,) = store.trace("ab" * 16)
        assert back == SpanRecord(
            trace_id="ab" * 16,
            span_id="cd" * 8,
            parent_span_id="ef" * 8,
            name="execute_tool search é",
            start_ns=1_000,
            end_ns=5_000,
            kind="client",
            status="error",
            status_message="timed out",
            attributes={"gen_ai.tool.name": "search", "scores": [0.5, 0.25], "ok": False, "n": 3},
            events=(SpanEvent("exception", 4_000, {"exception.type": "TimeoutError"}),),
        )

    def test_nanosecond_times_of_today_survive(self, store: TraceStore) -> None:
        now = time.time_ns()
        store.write([span(tid(9), sid(1), None, "chat tiny", 0, 1, t0=now)])
        (back,) = store.trace(tid(9))
        assert back.start_ns == now and back.end_ns == now + MS

    def test_trace_is_ordered_by_start_whatever_the_write_order(self, store: TraceStore) -> None:
        spans = agent_trace()
        store.write(list(reversed(spans)))
        assert [s.span_id for s in store.trace(AGENT_TRACE)] == [s.span_id for s in spans]

    def test_writing_a_span_again_replaces_it(self, store: TraceStore) -> None:
        store.write([span(tid(1), sid(1), None, "chat tiny", 0, 10)])
        store.write([span(tid(1), sid(1), None, "chat tiny", 0, 20, status="error")])
        (back,) = store.trace(tid(1))
        assert (back.end_ns, back.status) == (20 * MS, "error")
        store.write([])  # nothing to write is fine

    def test_last_and_recent_use_the_start_of_the_trace(self, store: TraceStore) -> None:
        assert store.last_trace_id() is None
        assert store.traces() == [] and store.trace_ids() == []
        early, late = tid(1), tid(2)
        store.write([span(late, sid(1), None, "invoke_agent late", 2000, 10)])
        store.write(
            [
                span(early, sid(1), None, "invoke_agent early", 1000, 5000),
                span(early, sid(2), sid(1), "chat tiny", 2500, 10),
            ]
        )
        assert store.last_trace_id() == late
        assert [s.trace_id for s in store.traces()] == [late, early]
        assert store.trace_ids() == [late, early]

    def test_summary_counts_steps_and_tokens(self, store: TraceStore) -> None:
        store.write(agent_trace())
        summary = store.summary(AGENT_TRACE)
        assert summary.root_name == "invoke_agent helper"
        assert (summary.span_count, summary.model_calls, summary.tool_calls) == (6, 2, 1)
        assert summary.steps == 4
        assert (summary.input_tokens, summary.output_tokens) == (250, 50)
        assert (summary.status, summary.errors) == ("ok", 1)

    def test_traces_lists_newest_first_up_to_the_limit(self, store: TraceStore) -> None:
        for n in range(1, 6):
            store.write([span(tid(n), sid(1), None, f"invoke_agent run{n}", n * 100, 10)])
        assert [s.root_name for s in store.traces(limit=3)] == [
            "invoke_agent run5",
            "invoke_agent run4",
            "invoke_agent run3",
        ]
        assert store.traces(limit=0) == []

    def test_filters_by_session_agent_errors_and_text(self, store: TraceStore) -> None:
        a, b, c = tid(1), tid(2), tid(3)
        store.write(
            [
                span(
                    a,
                    sid(1),
                    None,
                    "invoke_agent w",
                    100,
                    10,
                    attributes={"gen_ai.conversation.id": "s-1", "gen_ai.agent.name": "weather"},
                ),
                span(
                    a,
                    sid(2),
                    sid(1),
                    "execute_tool lookup",
                    101,
                    1,
                    attributes={"gen_ai.tool.name": "Lookup-Paris"},
                ),
                span(
                    b,
                    sid(1),
                    None,
                    "invoke_agent m",
                    200,
                    10,
                    attributes={"gen_ai.conversation.id": "s-2", "gen_ai.agent.name": "math"},
                ),
                span(b, sid(2), sid(1), "execute_tool divide", 201, 1, status="error"),
                span(
                    c,
                    sid(1),
                    None,
                    "invoke_agent w",
                    300,
                    10,
                    attributes={"gen_ai.agent.name": "weather"},
                ),
            ]
        )
        store.write([span(c, sid(3), sid(1), "chat tiny", 301, 1)])
        c_with_message = SpanRecord(
            c, sid(4), sid(1), "chat tiny", 302 * MS, 303 * MS, status_message="Division By Zero"
        )
        store.write([c_with_message])

        def ids(**filters: object) -> list[str]:
            return [s.trace_id for s in store.traces(10, **filters)]  # type: ignore[arg-type]

        assert ids(session="s-1") == [a]
        assert ids(agent="weather") == [c, a]
        assert ids(agent="weather", session="s-2") == []
        assert ids(errors=True) == [b]
        assert ids(search="lookup-PARIS") == [a]  # an attribute value, case-insensitive
        assert ids(search="DIVIDE") == [b]  # a span name
        assert ids(search="division by") == [c]  # a status message
        assert ids(search="nowhere") == []

    def test_a_prefix_of_six_or_more_characters_finds_the_trace(self, store: TraceStore) -> None:
        store.write(agent_trace())
        store.write([span("abcdef01" + "0" * 24, sid(1), None, "invoke_agent other", 0, 1)])
        assert store.summary("ababab").trace_id == AGENT_TRACE
        assert store.trace("ABABABAB")[0].trace_id == AGENT_TRACE
        assert store.summary("abcdef01").root_name == "invoke_agent other"

    def test_unknown_ambiguous_and_malformed_ids_raise_store_error(self, store: TraceStore) -> None:
        store.write([span("abcdef01" + "0" * 24, sid(1), None, "invoke_agent one", 0, 1)])
        store.write([span("abcdef02" + "0" * 24, sid(1), None, "invoke_agent two", 0, 1)])
        with pytest.raises(StoreError, match="ambiguous") as ambiguous:
            store.trace("abcdef")
        assert "abcdef01" in str(ambiguous.value) and "abcdef02" in str(ambiguous.value)
        with pytest.raises(StoreError, match="no trace '123456'"):
            store.summary("123456")
        with pytest.raises(StoreError, match="6 or more hex characters"):
            store.trace("abcde")
        with pytest.raises(StoreError, match="not a trace id"):
            store.trace("zzzzzzzz")

    def test_retention_deletes_whole_old_traces_only(self, store: TraceStore) -> None:
        now = time.time_ns()
        old, recent, long_running = tid(1), tid(2), tid(3)
        store.write(
            [
                span(old, sid(1), None, "invoke_agent old", 0, 10, t0=now - 3 * DAY_NS),
                span(old, sid(2), sid(1), "chat tiny", 1, 5, t0=now - 3 * DAY_NS),
                span(recent, sid(1), None, "invoke_agent recent", 0, 10, t0=now - DAY_NS // 2),
                span(long_running, sid(1), None, "invoke_agent long", 0, 10, t0=now - 3 * DAY_NS),
                span(long_running, sid(2), sid(1), "chat tiny", 0, 10, t0=now),
            ]
        )
        assert store.delete_older_than(86_400) == 1
        assert set(store.trace_ids()) == {recent, long_running}
        assert len(store.trace(long_running)) == 2
        with pytest.raises(StoreError, match="no trace"):
            store.trace(old)
        assert store.delete_older_than(86_400) == 0
        with pytest.raises(ValueError):
            store.delete_older_than(-1)

    def test_spans_since_a_time_returns_whole_traces(self, store: TraceStore) -> None:
        store.write(agent_trace())  # starts at 0
        store.write([span(tid(7), sid(1), None, "chat tiny", 5000, 10)])
        assert len(store.spans()) == 7
        assert [s.trace_id for s in store.spans(since_ns=1000 * MS)] == [tid(7)]

    def test_another_store_on_the_same_data_sees_the_writes(
        self, store: TraceStore, reopen: Callable[[], TraceStore]
    ) -> None:
        store.write(agent_trace())
        with reopen() as other:
            assert other.last_trace_id() == AGENT_TRACE
            other.write([span(tid(5), sid(1), None, "invoke_agent other", 5000, 1)])
        assert store.trace_ids() == [tid(5), AGENT_TRACE]

    def test_a_closed_store_raises_store_error(self, reopen: Callable[[], TraceStore]) -> None:
        closed = reopen()
        closed.trace_ids()
        closed.close()
        closed.close()
        assert closed.closed
        with pytest.raises(StoreError, match="closed"):
            closed.write(agent_trace())
        with pytest.raises(StoreError, match="closed"):
            closed.traces()

    def test_threads_can_share_one_store(self, store: TraceStore) -> None:
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(20):
                    trace_id = tid(worker * 1000 + i + 1)
                    store.write([span(trace_id, sid(1), None, "chat tiny", i, 1)])
                    store.trace(trace_id)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(store.trace_ids()) == 6 * 20
