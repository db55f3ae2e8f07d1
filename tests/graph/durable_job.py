"""A graph run in a child process by test_durability.py, so that the test can SIGKILL it.

usage: durable_job.py DB EFFECTS (start|resume|answer) [KILL_AT] [ANSWER_JSON]
Prints the final RunResult as JSON on stdout.
"""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from keel.graph import START, Graph, RunContext, SqliteCheckpointer, append

DB, EFFECTS, MODE = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
KILL_AT = int(sys.argv[4]) if len(sys.argv) > 4 else -1
STEPS = 12


class Job(BaseModel):
    receipts: Annotated[list[str], append] = Field(default_factory=list)
    total: int = 0
    approved_by: str = ""


def send(n: int, idempotency_key: str) -> str:
    """The real side effect: one line per execution in the effects file."""
    with EFFECTS.open("a") as f:
        f.write(f"{n} {idempotency_key}\n")
    return f"receipt-{n}"


def make_node(i: int) -> Any:
    async def node(state: Job, ctx: RunContext) -> dict[str, Any]:
        await asyncio.sleep(0.05)  # slow enough for the test to kill it mid-run
        receipt = await ctx.effect(send, i)
        if i == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"receipts": [receipt], "total": state.total + i}

    return node


async def approve(state: Job, ctx: RunContext) -> dict[str, Any]:
    await ctx.effect(send, 100)  # notify the reviewer: must happen once, not once per attempt
    answer = await ctx.interrupt({"question": "send the batch?", "total": state.total})
    if not answer["approved"]:
        return {"approved_by": "nobody"}
    return {"approved_by": answer["by"]}


graph = Graph(Job, name="durable-job")
for i in range(STEPS):
    graph.add_node(f"n{i}", make_node(i))
graph.add_edge(START, "n0")
graph.add_sequence(*(f"n{i}" for i in range(STEPS)))
graph.add_node("approve", approve)
graph.add_edge(f"n{STEPS - 1}", "approve")


async def main() -> None:
    checkpointer = SqliteCheckpointer(DB, keep_last=3)
    compiled = graph.compile(checkpointer=checkpointer)
    if MODE == "start":
        result = await compiled.run(run_id="job")
    elif MODE == "resume":
        result = await compiled.resume("job")
    else:
        result = await compiled.resume("job", json.loads(sys.argv[5]))
    out = {
        "status": result.status,
        "state": result.state.model_dump(),
        "interrupts": [{"id": i.id, "value": i.value} for i in result.interrupts],
    }
    print(json.dumps(out))
    await checkpointer.aclose()


if __name__ == "__main__":
    asyncio.run(main())
