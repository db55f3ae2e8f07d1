"""Running a compiled graph as one node of another.

The subgraph gets the parent's fields that it shares (or a ``Send`` argument) as its input and
returns, as the node's update, the shared fields it changed: for an ``append`` field only the new
items, for a ``merge`` field only the changed keys, so the parent's reducers do not count anything
twice. It runs inside the parent's step (one parent checkpoint), shares the parent's effect journal
under the node's key, and its interrupts pause the parent run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from keel.graph.builder import START
from keel.graph.runtime import Interrupted, RunContext
from keel.graph.state import StateSchema, append, merge

if TYPE_CHECKING:
    from keel.graph.engine import CompiledGraph

__all__ = ["run_subgraph"]


async def run_subgraph(
    sub: CompiledGraph[Any], parent: StateSchema, value: Any, ctx: RunContext, max_steps: int
) -> dict[str, Any]:
    """Run ``sub`` on ``value`` (the parent state or a ``Send`` argument); return the update."""
    from keel.graph.engine import _Run

    shared = [k for k in sub.schema.reducers if k in parent.reducers]
    if isinstance(value, parent.cls):
        initial = sub.schema.create({k: getattr(value, k) for k in shared})
    else:
        initial = sub.schema.create(value)
    run = _Run(
        ctx.run_id,
        initial,
        0,
        [],
        ctx.journal,
        ctx._emit,
        max_steps,
        prefix=f"{ctx.key}/",
        path=(*ctx.path, ctx.node),
    )
    run.tasks = sub._route(run, START, initial, None)
    result = await sub._execute(run)
    if result.status == "interrupted":
        raise Interrupted(list(result.interrupts))
    update: dict[str, Any] = {}
    for key in shared:
        before, after = getattr(initial, key), getattr(result.state, key)
        if before == after:
            continue
        reducer = parent.reducers[key]
        if reducer is append and isinstance(after, list) and after[: len(before)] == before:
            update[key] = after[len(before) :]
        elif reducer is merge and isinstance(after, dict):
            update[key] = {k: v for k, v in after.items() if before.get(k, object()) != v}
        else:
            update[key] = after.model_copy() if isinstance(after, BaseModel) else after
    return update
