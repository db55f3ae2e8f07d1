"""The spans real runs record, checked against the GenAI semantic conventions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import record_demo_runs

from keel.memory.base import VectorRecord
from keel.memory.retrieval import Retriever
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder
from keel.observe import SQLiteTraceStore
from keel.observe import semconv as sc
from keel.observe.conversation import conversation, current_conversation_id


def test_every_span_of_a_graph_run_follows_the_conventions(traced: SQLiteTraceStore) -> None:
    runs = record_demo_runs(traced)
    spans = traced.trace(runs.ok_trace)
    names = [s.name for s in spans]
    assert names == [
        "invoke_agent weather-graph",
        "node plan",
        "node ask",
        "invoke_agent weather-agent",
        "chat weather-model",
        "execute_tool lookup",
        "chat weather-model",
        "node finish",
    ]
    # The session opened around the run is on every span, from the root to the tool call.
    assert {s.attributes.get(sc.GEN_AI_CONVERSATION_ID) for s in spans} == {runs.session}

    by_name = {s.name: s for s in spans}
    root = by_name["invoke_agent weather-graph"]
    assert root.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert root.attributes[sc.GEN_AI_AGENT_NAME] == "weather-graph"
    assert root.attributes[sc.KEEL_GRAPH_PATH] == ["plan", "ask", "finish"]
    assert by_name["node ask"].attributes[sc.KEEL_GRAPH_STEP] == 2

    chats = [s for s in spans if s.name == "chat weather-model"]
    for chat in chats:
        assert chat.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"
        assert chat.attributes[sc.GEN_AI_PROVIDER_NAME] == "scripted"
        assert chat.attributes[sc.GEN_AI_REQUEST_MODEL] == "weather-model"
        assert chat.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10
        assert chat.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
        # 10 tokens at $2/M in + 5 tokens at $6/M out
        assert chat.float_attribute(sc.KEEL_COST_USD) == pytest.approx(5e-5)
    assert chats[0].attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["tool_calls"]

    tool = by_name["execute_tool lookup"]
    assert tool.attributes[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert tool.attributes[sc.GEN_AI_TOOL_NAME] == "lookup"
    assert tool.parent_span_id == by_name["invoke_agent weather-agent"].span_id
    assert by_name["invoke_agent weather-agent"].parent_span_id == by_name["node ask"].span_id

    summary = traced.summary(runs.ok_trace)
    assert summary.conversation_id == runs.session
    assert summary.agent_name == "weather-graph"
    assert summary.cost_usd == pytest.approx(1e-4)


def test_a_run_without_a_session_gets_its_own_conversation_id(traced: SQLiteTraceStore) -> None:
    runs = record_demo_runs(traced)
    spans = traced.trace(runs.failed_trace)
    ids = {s.attributes.get(sc.GEN_AI_CONVERSATION_ID) for s in spans}
    assert len(ids) == 1
    (only,) = ids
    assert isinstance(only, str) and len(only) == 32 and only != runs.session
    failed = {s.name: s for s in spans if s.status == "error"}
    assert set(failed) == {"invoke_agent math-agent", "execute_tool divide", "chat weather-model"}
    assert failed["execute_tool divide"].attributes[sc.ERROR_TYPE] == "tool_error"
    assert "division by zero" in failed["execute_tool divide"].status_message
    assert failed["chat weather-model"].attributes[sc.ERROR_TYPE] == "RuntimeError"


def test_conversation_scopes_nest_and_reset(traced: SQLiteTraceStore) -> None:
    assert current_conversation_id() is None
    with conversation("outer") as outer:
        with conversation("inner") as inner:
            assert inner == outer == "outer"
        with conversation("replaced", keep_outer=False) as replaced:
            assert current_conversation_id() == replaced == "replaced"
        assert current_conversation_id() == "outer"
    assert current_conversation_id() is None


def test_retrieval_spans_carry_the_operation_and_the_session(
    traced: SQLiteTraceStore, tmp_path: Path
) -> None:
    async def go() -> None:
        embedder = HashingEmbedder(dimension=32)
        store = SQLiteVectorStore(tmp_path / "memory.db", 32)
        texts = ["Venus is hot", "Mars is red", "Jupiter is big"]
        vectors = await embedder.embed(texts)
        await store.upsert(
            "planets",
            [
                VectorRecord(id=str(i), vector=v, text=t)
                for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
            ],
        )
        with conversation("lookup-session"):
            hits = await Retriever(store, embedder).retrieve("hot planet", "planets", k=2)
        assert len(hits) == 2
        await store.close()

    asyncio.run(go())
    (span,) = traced.trace(traced.last_trace_id() or "")
    assert span.name == "retrieval planets"
    assert span.attributes[sc.GEN_AI_OPERATION_NAME] == "retrieval"
    assert span.attributes[sc.GEN_AI_CONVERSATION_ID] == "lookup-session"
    assert span.attributes["gen_ai.data_source.id"] == "planets"
    assert span.attributes["keel.retrieval.hits"] == 2
    assert sc.KEEL_RETRIEVAL_QUERY not in span.attributes  # content capture is off by default
