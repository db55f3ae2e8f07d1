"""A graph for the shared-state tests: one node asks a human (an interrupt) and reports the
answer, so the question can be asked in one ``keel serve`` process and answered in another."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from keel.graph import START, Graph, RunContext


class Ask(BaseModel):
    input: str = ""
    output: str = ""


def approval() -> Graph[Ask]:
    async def ask(state: Ask, ctx: RunContext) -> dict[str, Any]:
        answer = await ctx.interrupt({"question": f"may I {state.input}?"})
        verdict = "approved" if answer.get("approved") else "denied"
        return {"output": f"{state.input}: {verdict}"}

    graph = Graph(Ask, name="approval")
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    return graph
