"""The graph engine: reducers, routing, fan-out and joins, subgraphs, guards, events, failures."""

import asyncio
import operator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from keel.errors import GraphDefinitionError, GraphError, GraphStepLimitError, NodeError
from keel.graph import (
    END,
    START,
    Event,
    Graph,
    GraphState,
    MemoryCheckpointer,
    Reducer,
    RetryPolicy,
    RunContext,
    Send,
    append,
    merge,
)


class Doc(BaseModel):
    log: Annotated[list[str], append] = Field(default_factory=list)
    tags: Annotated[dict[str, int], merge] = Field(default_factory=dict)
    total: Annotated[int, Reducer(operator.add)] = 0
    topic: str = ""


async def test_reducers_fold_updates_of_parallel_nodes_in_task_order() -> None:
    g = Graph(Doc)
    g.add_node("a", lambda s: {"log": ["a"], "tags": {"a": 1}, "total": 2, "topic": "x"})
    g.add_node("b", lambda s: {"log": "b", "tags": {"b": 2}, "total": 3, "topic": "y"})
    g.add_edge(START, "a").add_edge(START, "b")
    result = await g.compile().run({"log": ["start"], "total": 1})
    assert result.status == "done"
    assert result.state.log == ["start", "a", "b"]
    assert result.state.tags == {"a": 1, "b": 2}
    assert result.state.total == 6
    assert result.state.topic == "y"
    assert result.steps == 1


async def test_conditional_edges_route_on_the_updated_state() -> None:
    g = Graph(Doc)
    g.add_node("classify", lambda s: {"topic": "billing" if "invoice" in s.log[0] else "other"})
    g.add_node("billing", lambda s: {"log": ["billing desk"]})
    g.add_node("other", lambda s: {"log": ["front desk"]})
    g.add_edge(START, "classify")
    g.add_conditional_edges("classify", lambda s: s.topic, ["billing", "other"])
    compiled = g.compile()
    assert (await compiled.run({"log": ["my invoice"]})).state.log[-1] == "billing desk"
    result = await compiled.run({"log": ["hello"]})
    assert result.state.log[-1] == "front desk"
    assert result.path == ("classify", "other")


class Fan(BaseModel):
    n: int = 3
    parts: Annotated[list[int], append] = Field(default_factory=list)
    summary: str = ""


async def test_send_fans_out_to_n_branches_and_the_join_runs_once() -> None:
    seen: list[int] = []

    async def square(x: int) -> dict[str, Any]:
        await asyncio.sleep(0.001 * (5 - x))  # finish out of order
        seen.append(x)
        return {"parts": [x * x]}

    g = Graph(Fan)
    g.add_node("plan", lambda s: None)
    g.add_node("square", square)
    g.add_node("join", lambda s: {"summary": f"{len(s.parts)} parts, sum {sum(s.parts)}"})
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", lambda s: [Send("square", i) for i in range(s.n)])
    g.add_edge("square", "join")
    result = await g.compile().run({"n": 5})
    assert seen != sorted(seen)  # they really ran concurrently
    assert result.state.parts == [0, 1, 4, 9, 16]  # but fold in task order
    assert result.state.summary == "5 parts, sum 30"
    assert result.path.count("join") == 1


async def test_a_join_waits_for_branches_of_different_lengths() -> None:
    g = Graph(Doc)
    g.add_node("short", lambda s: {"log": ["short"]})
    g.add_node("long1", lambda s: {"log": ["long1"]})
    g.add_node("long2", lambda s: {"log": ["long2"]})
    g.add_node("join", lambda s: {"log": ["join"]})
    g.add_edge(START, "short").add_edge(START, "long1").add_edge("long1", "long2")
    g.add_edge(["short", "long2"], "join")
    result = await g.compile().run()
    assert result.state.log == ["short", "long1", "long2", "join"]


class Inner(BaseModel):
    log: Annotated[list[str], append] = Field(default_factory=list)
    draft: str = ""


async def test_a_subgraph_runs_as_a_node_and_returns_only_its_changes() -> None:
    inner = Graph(Inner, name="inner")
    inner.add_node("write", lambda s: {"draft": "text", "log": ["inner write"]})
    inner.add_node("check", lambda s: {"log": [f"inner check {s.draft}"]})
    inner.add_edge(START, "write").add_edge("write", "check")
    outer = Graph(Doc)
    outer.add_node("before", lambda s: {"log": ["before"]})
    outer.add_node("sub", inner.compile())
    outer.add_node("after", lambda s: {"log": ["after"]})
    outer.add_sequence("before", "sub", "after").add_edge(START, "before")
    events = [e async for e in outer.compile().stream()]
    result = events[-1].data
    assert result.state.log == ["before", "inner write", "inner check text", "after"]
    inner_events = [(e.kind, e.node) for e in events if e.path == ("sub",)]
    assert ("node_finished", "check") in inner_events


async def test_max_steps_stops_a_loop_with_a_typed_error() -> None:
    g = Graph(Doc)
    g.add_node("spin", lambda s: {"total": 1})
    g.add_edge(START, "spin")
    g.add_conditional_edges("spin", lambda s: "spin")
    with pytest.raises(GraphStepLimitError, match="max_steps=25"):
        await g.compile(max_steps=25).run()


async def test_cancelling_a_run_stops_it_and_it_resumes_from_the_last_step() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def slow(state: Doc) -> dict[str, Any]:
        started.set()
        if not gate.is_set():
            await asyncio.sleep(3600)
        return {"log": ["slow"]}

    g = Graph(Doc)
    g.add_node("first", lambda s: {"log": ["first"]})
    g.add_node("slow", slow)
    g.add_sequence("first", "slow").add_edge(START, "first")
    compiled = g.compile(checkpointer=MemoryCheckpointer())
    task = asyncio.create_task(compiled.run(run_id="r1"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    state, checkpoint = await compiled.get_state("r1")
    assert state.log == ["first"]
    assert checkpoint.step == 1
    gate.set()
    result = await compiled.resume("r1")
    assert result.state.log == ["first", "slow"]


async def test_stream_yields_node_state_and_custom_events_in_order() -> None:
    async def talk(state: Doc, ctx: RunContext) -> dict[str, Any]:
        for token in ("hel", "lo"):
            ctx.emit("token", token)
        return {"log": ["hello"]}

    g = Graph(Doc)
    g.add_node("talk", talk)
    g.add_edge(START, "talk").add_edge("talk", END)
    events: list[Event] = [e async for e in g.compile().stream()]
    kinds = [e.kind for e in events]
    assert kinds == [
        "run_started",
        "node_started",
        "custom",
        "custom",
        "node_finished",
        "state",
        "run_finished",
    ]
    assert [e.data["data"] for e in events if e.kind == "custom"] == ["hel", "lo"]
    assert events[-1].data.state.log == ["hello"]


async def test_retry_policy_retries_then_succeeds() -> None:
    attempts: list[int] = []

    def flaky(state: Doc) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return {"log": ["ok"]}

    g = Graph(Doc)
    g.add_node("flaky", flaky, retry=RetryPolicy(max_attempts=3))
    g.add_edge(START, "flaky")
    result = await g.compile().run()
    assert result.state.log == ["ok"]
    assert len(attempts) == 3


class Guarded(GraphState):
    answer: str = ""


async def test_a_failing_node_records_a_structured_error_and_takes_its_fallback() -> None:
    def broken(state: Guarded) -> dict[str, Any]:
        raise ValueError("upstream said no")

    g = Graph(Guarded)
    g.add_node("primary", broken, retry=RetryPolicy(max_attempts=2), fallback="backup")
    g.add_node("backup", lambda s: {"answer": f"fallback after {s.errors[0].type}"})
    g.add_node("never", lambda s: {"answer": "wrong"})
    g.add_edge(START, "primary").add_edge("primary", "never")
    result = await g.compile().run()
    assert result.state.answer == "fallback after ValueError"
    failure = result.state.errors[0]
    assert (failure.node, failure.attempts, failure.message) == ("primary", 2, "upstream said no")


async def test_a_failing_node_without_fallback_raises_node_error() -> None:
    g = Graph(Doc)
    g.add_node("boom", lambda s: 1 / 0)
    g.add_edge(START, "boom")
    with pytest.raises(NodeError, match="ZeroDivisionError") as info:
        await g.compile().run()
    assert isinstance(info.value.__cause__, ZeroDivisionError)


async def test_bad_updates_are_typed_errors() -> None:
    g = Graph(Doc)
    g.add_node("bad", lambda s: {"nope": 1})
    g.add_edge(START, "bad")
    with pytest.raises(GraphError, match="'nope', which is not a field of Doc"):
        await g.compile().run()
    g2 = Graph(Doc)
    g2.add_node("bad", lambda s: {"total": "many"})
    g2.add_edge(START, "bad")
    with pytest.raises(GraphError, match="invalid value"):
        await g2.compile().run()
    with pytest.raises(GraphError, match="invalid input for Doc"):
        await g2.compile().run({"total": "x"})


def test_malformed_graphs_are_rejected_at_compile_time() -> None:
    g = Graph(Doc)
    g.add_node("a", lambda s: None)
    with pytest.raises(GraphDefinitionError, match="no edge from START"):
        g.compile()
    g.add_edge(START, "a").add_edge("a", "ghost")
    with pytest.raises(GraphDefinitionError, match="unknown node"):
        g.compile()
    with pytest.raises(GraphDefinitionError, match="already exists"):
        g.add_node("a", lambda s: None)
    with pytest.raises(GraphDefinitionError, match="takes 3 arguments"):
        g.add_node("c", lambda a, b, c: None)


def test_mermaid_draws_every_kind_of_edge() -> None:
    g = Graph(Guarded)
    g.add_node("a", lambda s: None, fallback="b")
    g.add_node("b", lambda s: None)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: END, ["b", END])
    text = g.compile().mermaid()
    assert text.startswith("flowchart TD\n")
    for line in ("__start__ --> n_a", "n_a -.-> n_b", "n_a -.-> __end__", "n_a -. error .-> n_b"):
        assert line in text
