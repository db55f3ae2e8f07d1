"""SQLiteTraceStore on real files: round trips, lookup by id prefix, summaries, retention."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.errors import StoreError
from keel.observe import SpanEvent, SpanRecord, SQLiteTraceStore, summarize_trace
from keel.observe.records import AttributeValue, SpanStatus

MS = 1_000_000
DAY_NS = 86_400 * 1_000_000_000


OPERATIONS = {"chat", "execute_tool", "retrieval", "embeddings", "invoke_agent"}


def _span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    start_ms: int,
    duration_ms: int,
    *,
    t0: int = 0,
    status: SpanStatus = "unset",
    tokens_in: int | None = None,
    tokens_out: int | None = None,
) -> SpanRecord:
    """A hand-built span; its operation is the first word of its name, as in Keel's spans."""
    attributes: dict[str, AttributeValue] = {}
    if name.split()[0] in OPERATIONS:
        attributes["gen_ai.operation.name"] = name.split()[0]
    if tokens_in is not None:
        attributes["gen_ai.usage.input_tokens"] = tokens_in
    if tokens_out is not None:
        attributes["gen_ai.usage.output_tokens"] = tokens_out
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        start_ns=t0 + start_ms * MS,
        end_ns=t0 + (start_ms + duration_ms) * MS,
        status=status,
        attributes=attributes,
    )


def _trace_id(n: int) -> str:
    return f"{n:032x}"


def _sid(n: int) -> str:
    return f"{n:016x}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteTraceStore]:
    with SQLiteTraceStore(tmp_path / "nested" / "dir" / "traces.db") as s:
        yield s


AGENT_TRACE = "ab" * 16


def _agent_trace() -> list[SpanRecord]:
    """One agent run: two model calls, a retrieval, two tool calls (one failed), an embedding
    request and a graph node that is not a step."""
    t = AGENT_TRACE
    return [
        _span(t, _sid(1), None, "invoke_agent helper", 0, 1000),
        _span(t, _sid(2), _sid(1), "graph node plan", 1, 998),
        _span(t, _sid(3), _sid(2), "embeddings minilm", 2, 5, tokens_in=50),
        _span(t, _sid(4), _sid(2), "retrieval docs", 10, 20),
        _span(t, _sid(5), _sid(2), "chat tiny", 40, 300, tokens_in=100, tokens_out=20),
        _span(t, _sid(6), _sid(2), "execute_tool search", 350, 10),
        _span(t, _sid(7), _sid(2), "execute_tool divide", 370, 10, status="error"),
        _span(t, _sid(8), _sid(2), "chat tiny", 400, 500, tokens_in=150, tokens_out=30),
    ]


def test_round_trip_keeps_every_field(store: SQLiteTraceStore) -> None:
    span = SpanRecord(
        trace_id="AB" * 16,
        span_id="cd" * 8,
        parent_span_id="EF" * 8,
        name="execute_tool search",
        start_ns=1_000,
        end_ns=5_000,
        kind="client",
        status="error",
        status_message="timed out",
        attributes={"gen_ai.tool.name": "search", "scores": [0.5, 0.25], "ok": False},
        events=(SpanEvent("exception", 4_000, {"exception.type": "TimeoutError"}),),
    )
    store.write([span])
    (back,) = store.trace("ab" * 16)
    assert back == SpanRecord(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        parent_span_id="ef" * 8,
        name="execute_tool search",
        start_ns=1_000,
        end_ns=5_000,
        kind="client",
        status="error",
        status_message="timed out",
        attributes={"gen_ai.tool.name": "search", "scores": [0.5, 0.25], "ok": False},
        events=(SpanEvent("exception", 4_000, {"exception.type": "TimeoutError"}),),
    )
    assert back.duration_ns == 4_000


def test_trace_is_ordered_by_start_whatever_the_write_order(store: SQLiteTraceStore) -> None:
    spans = _agent_trace()
    store.write(list(reversed(spans)))
    assert [s.span_id for s in store.trace(AGENT_TRACE)] == [s.span_id for s in spans]


def test_writing_a_span_again_replaces_it(store: SQLiteTraceStore) -> None:
    span = _span(_trace_id(1), "a" * 16, None, "chat tiny", 0, 10)
    store.write([span])
    store.write([_span(_trace_id(1), "a" * 16, None, "chat tiny", 0, 20)])
    (back,) = store.trace(_trace_id(1))
    assert back.end_ns == 20 * MS


def test_last_trace_id_is_the_trace_whose_root_started_last(store: SQLiteTraceStore) -> None:
    assert store.last_trace_id() is None
    early, late = _trace_id(1), _trace_id(2)
    store.write([_span(late, "b" * 16, None, "invoke_agent late", 2000, 10)])
    # The early trace has a span that started after the late root: the root start decides.
    store.write(
        [
            _span(early, "a" * 16, None, "invoke_agent early", 1000, 5000),
            _span(early, "c" * 16, "a" * 16, "chat tiny", 2500, 10),
        ]
    )
    assert store.last_trace_id() == late
    assert [s.trace_id for s in store.traces()] == [late, early]


def test_summary_counts_steps_calls_and_tokens(store: SQLiteTraceStore) -> None:
    store.write(_agent_trace())
    summary = store.summary(AGENT_TRACE)
    assert summary.trace_id == AGENT_TRACE
    assert summary.root_name == "invoke_agent helper"
    assert summary.span_count == 8
    assert summary.model_calls == 2
    assert summary.tool_calls == 2
    assert summary.retrievals == 1
    assert summary.steps == 5  # chat + execute_tool + retrieval; not embeddings, not graph nodes
    assert (summary.input_tokens, summary.output_tokens) == (250, 50)  # chat spans only
    assert summary.wall_time_s == pytest.approx(1.0)
    assert summary.status == "ok"  # a failed tool call went back to the model; the run succeeded
    assert summary.errors == 1
    assert summary.start_ns == 0


def test_summary_status_is_error_when_the_root_failed() -> None:
    spans = _agent_trace()
    spans[0] = _span(AGENT_TRACE, _sid(1), None, "invoke_agent helper", 0, 1000, status="error")
    assert summarize_trace(spans).status == "error"


def test_a_trace_whose_root_is_missing_takes_its_earliest_span_as_root() -> None:
    remote_parent = "f" * 16
    spans = [
        _span(_trace_id(3), "b" * 16, remote_parent, "chat tiny", 50, 10),
        _span(_trace_id(3), "a" * 16, remote_parent, "invoke_agent served", 10, 100),
    ]
    assert summarize_trace(spans).root_name == "invoke_agent served"
    with pytest.raises(ValueError):
        summarize_trace([])


def test_traces_lists_newest_first_up_to_the_limit(store: SQLiteTraceStore) -> None:
    for n in range(1, 6):
        store.write([_span(_trace_id(n), "a" * 16, None, f"invoke_agent run{n}", n * 100, 10)])
    listed = store.traces(limit=3)
    assert [s.root_name for s in listed] == [
        "invoke_agent run5",
        "invoke_agent run4",
        "invoke_agent run3",
    ]
    assert store.traces(limit=0) == []


def test_a_trace_id_prefix_of_six_or_more_characters_finds_the_trace(
    store: SQLiteTraceStore,
) -> None:
    store.write(_agent_trace())
    store.write([_span("abcdef01" + "0" * 24, "a" * 16, None, "invoke_agent other", 0, 1)])
    assert store.summary("ababab").trace_id == AGENT_TRACE
    assert store.trace("ABABABAB")[0].trace_id == AGENT_TRACE
    assert store.summary("abcdef01").root_name == "invoke_agent other"
    assert store.summary(AGENT_TRACE).trace_id == AGENT_TRACE


def test_unknown_ambiguous_and_malformed_ids_raise_store_error(store: SQLiteTraceStore) -> None:
    store.write([_span("abcdef01" + "0" * 24, "a" * 16, None, "invoke_agent one", 0, 1)])
    store.write([_span("abcdef02" + "0" * 24, "a" * 16, None, "invoke_agent two", 0, 1)])
    with pytest.raises(StoreError, match="ambiguous") as ambiguous:
        store.trace("abcdef")
    assert "abcdef01" in str(ambiguous.value) and "abcdef02" in str(ambiguous.value)
    with pytest.raises(StoreError, match="no trace '123456'"):
        store.summary("123456")
    with pytest.raises(StoreError, match="6 or more hex characters"):
        store.trace("abcde")
    with pytest.raises(StoreError, match="not a trace id"):
        store.trace("zzzzzzzz")


def test_retention_deletes_old_traces_only(store: SQLiteTraceStore) -> None:
    now = time.time_ns()
    old, recent, long_running = _trace_id(1), _trace_id(2), _trace_id(3)
    store.write(
        [
            _span(old, "a" * 16, None, "invoke_agent old", 0, 10, t0=now - 3 * DAY_NS),
            _span(old, "b" * 16, "a" * 16, "chat tiny", 1, 5, t0=now - 3 * DAY_NS),
            _span(recent, "a" * 16, None, "invoke_agent recent", 0, 10, t0=now - DAY_NS // 2),
            # Started three days ago, but its last span ended just now: it is kept whole.
            _span(long_running, "a" * 16, None, "invoke_agent long", 0, 10, t0=now - 3 * DAY_NS),
            _span(long_running, "b" * 16, "a" * 16, "chat tiny", 0, 10, t0=now),
        ]
    )
    assert store.delete_older_than(86_400) == 1
    assert {s.trace_id for s in store.traces()} == {recent, long_running}
    assert len(store.trace(long_running)) == 2
    with pytest.raises(StoreError, match="no trace"):
        store.trace(old)
    assert store.delete_older_than(86_400) == 0
    with pytest.raises(ValueError):
        store.delete_older_than(-1)


def test_the_file_is_a_versioned_wal_database(store: SQLiteTraceStore) -> None:
    store.write(_agent_trace())
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 8
    # Reopening an existing file keeps its spans.
    with SQLiteTraceStore(store.path) as again:
        assert again.last_trace_id() == AGENT_TRACE


def test_a_file_from_a_newer_keel_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    SQLiteTraceStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteTraceStore(path)


def test_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    path.write_bytes(b"this is not sqlite, just text that is long enough" * 40)
    with pytest.raises(StoreError, match=r"cannot open the trace store .*traces\.db"):
        SQLiteTraceStore(path)


def test_a_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = SQLiteTraceStore(tmp_path / "traces.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.write(_agent_trace())
    with pytest.raises(StoreError, match="closed"):
        store.traces()


def test_threads_can_share_one_store(store: SQLiteTraceStore) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(40):
                trace_id = _trace_id(worker * 1000 + i + 1)
                store.write([_span(trace_id, "a" * 16, None, "chat tiny", i, 1)])
                store.trace(trace_id)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.traces(limit=1000)) == 8 * 40
