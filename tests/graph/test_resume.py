"""Resuming runs: parallel interrupts, typed Send arguments, joins, subgraphs, limits, TTL."""

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from keel.errors import GraphError, GraphStepLimitError
from keel.graph import (
    START,
    Graph,
    MemoryCheckpointer,
    RunContext,
    Send,
    SqliteCheckpointer,
    append,
)
from keel.graph.checkpoint import Checkpoint


class Item(BaseModel):
    name: str
    qty: int


class Order(BaseModel):
    items: list[Item] = Field(default_factory=list)
    lines: Annotated[list[str], append] = Field(default_factory=list)
    done: bool = False


def order_graph(seen_types: list[str]) -> Graph[Order]:
    async def check(item: Item, ctx: RunContext) -> dict[str, Any]:
        seen_types.append(type(item).__name__)
        answer = await ctx.interrupt(f"ship {item.qty} x {item.name}?")
        return {"lines": [f"{item.name}: {answer}"]}

    g = Graph(Order)
    g.add_node("check", check, input_type=Item)
    g.add_node("close", lambda s: {"done": True})
    g.add_conditional_edges(START, lambda s: [Send("check", i) for i in s.items], ["check"])
    g.add_edge("check", "close")
    return g


async def test_parallel_interrupts_are_answered_by_id_and_send_args_keep_their_type(
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    items = [Item(name="bolt", qty=3), Item(name="nut", qty=5)]
    first = order_graph(seen).compile(checkpointer=SqliteCheckpointer(tmp_path / "o.db"))
    paused = await first.run({"items": items}, run_id="o1")
    assert paused.status == "interrupted"
    assert sorted(i.value for i in paused.interrupts) == ["ship 3 x bolt?", "ship 5 x nut?"]
    again = order_graph(seen).compile(checkpointer=SqliteCheckpointer(tmp_path / "o.db"))
    with pytest.raises(GraphError, match="answer with a dict by id"):
        await again.resume("o1", "yes")
    answers = {i.id: ("yes" if "bolt" in i.value else "no") for i in paused.interrupts}
    done = await again.resume("o1", answers)
    assert done.state.lines == ["bolt: yes", "nut: no"]
    assert done.state.done
    assert seen == ["Item"] * 4  # the resumed branches got Items back, not dicts


async def test_a_join_barrier_survives_a_restart() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def long_2(state: Order) -> dict[str, Any]:
        started.set()
        await gate.wait()
        return {"lines": ["long2"]}

    g = Graph(Order)
    g.add_node("short", lambda s: {"lines": ["short"]})
    g.add_node("long1", lambda s: {"lines": ["long1"]})
    g.add_node("long2", long_2)
    g.add_node("join", lambda s: {"lines": ["join"]})
    g.add_edge(START, "short").add_edge(START, "long1").add_edge("long1", "long2")
    g.add_edge(["short", "long2"], "join")
    checkpointer = MemoryCheckpointer()
    task = asyncio.create_task(g.compile(checkpointer=checkpointer).run(run_id="j"))
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    gate.set()
    fresh = g.compile(checkpointer=checkpointer)  # nothing shared but the checkpointer
    result = await fresh.resume("j")
    assert result.state.lines == ["short", "long1", "long2", "join"]


class Notes(BaseModel):
    notes: Annotated[list[str], append] = Field(default_factory=list)


async def test_an_interrupt_inside_a_subgraph_pauses_and_resumes_the_parent() -> None:
    calls: list[str] = []

    def record(what: str) -> str:
        calls.append(what)
        return what

    async def ask(state: Notes, ctx: RunContext) -> dict[str, Any]:
        await ctx.effect(record, "before question")
        answer = await ctx.interrupt("title?")
        return {"notes": [f"title: {answer}"]}

    inner = Graph(Notes, name="inner")
    inner.add_node("ask", ask)
    inner.add_edge(START, "ask")
    outer = Graph(Notes)
    outer.add_node("sub", inner.compile())
    outer.add_node("end", lambda s: {"notes": ["end"]})
    outer.add_edge(START, "sub").add_edge("sub", "end")
    compiled = outer.compile(checkpointer=MemoryCheckpointer())
    paused = await compiled.run(run_id="s")
    assert paused.interrupts[0].id == "1/sub#0/1/ask#0/interrupt0"
    events = [e async for e in compiled.stream(run_id="s", resume=True, answer="Durable")]
    result = events[-1].data
    assert result.state.notes == ["title: Durable", "end"]
    assert calls == ["before question"]


async def test_a_run_stopped_by_max_steps_can_continue_with_more() -> None:
    g = Graph(Notes)
    g.add_node("tick", lambda s: {"notes": ["t"]})
    g.add_edge(START, "tick")
    g.add_conditional_edges("tick", lambda s: "tick" if len(s.notes) < 8 else None)
    compiled = g.compile(checkpointer=MemoryCheckpointer(), max_steps=5)
    with pytest.raises(GraphStepLimitError):
        await compiled.run(run_id="m")
    result = await compiled.resume("m", max_steps=20)
    assert len(result.state.notes) == 8
    assert result.steps == 8


async def test_ttl_drops_old_checkpoints_when_the_file_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "ttl.db"
    cp = SqliteCheckpointer(path)
    await cp.put(Checkpoint("old", 0, "{}", created_at=time.time() - 7200))
    await cp.put(Checkpoint("new", 0, "{}"))
    await cp.put_effect("old", "k", "1")
    await cp.aclose()
    reopened = SqliteCheckpointer(path, ttl=3600)
    assert await reopened.latest("old") is None
    assert await reopened.latest("new") is not None
    assert await reopened.get_effect("old", "k") == "1"  # journalled just now: younger than ttl
    await reopened.aclose()
