"""A graph for the restart tests: one node performs a journalled side effect (appending a line
to the file named by SERVE_TEST_COUNTER), then waits until the file SERVE_TEST_GATE exists."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from keel.graph import START, Graph, RunContext


class Job(BaseModel):
    input: str = ""
    output: str = ""


def build() -> Graph[Job]:
    counter = Path(os.environ["SERVE_TEST_COUNTER"])
    gate = Path(os.environ["SERVE_TEST_GATE"])

    def bump(idempotency_key: str) -> int:
        with counter.open("a") as f:
            f.write(idempotency_key + "\n")
        return len(counter.read_text().splitlines())

    async def work(state: Job, ctx: RunContext) -> dict[str, Any]:
        times = await ctx.effect(bump)
        ctx.emit("progress", "waiting for the gate")
        while not gate.exists():  # noqa: ASYNC110, ASYNC240 - the test opens it
            await asyncio.sleep(0.05)
        return {"output": f"{state.input}: the effect ran {times} time(s)"}

    graph = Graph(Job, name="blocker")
    graph.add_node("work", work)
    graph.add_edge(START, "work")
    return graph
