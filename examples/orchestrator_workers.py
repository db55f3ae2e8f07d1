"""Orchestrator-workers: a planner splits the goal, workers (a cheaper model) run in parallel,
the planner synthesises.

Runs offline: python examples/orchestrator_workers.py
"""

import asyncio

from keel.graph.patterns import orchestrator_workers
from keel.llm.testing import FunctionModel, ScriptedModel

planner = ScriptedModel(
    [
        "1. List the tables\n2. Find the slow queries\n3. Propose indexes",
        "Plan: add an index on runs(created_at); the rest is fine.",
    ]
)
worker = FunctionModel(lambda call: f"done: {call.last_user_text.lower()}", name="cheap-worker")
graph = orchestrator_workers(planner, worker)


async def main() -> None:
    result = await graph.compile().run({"goal": "speed up the database"})
    for task, outcome in result.state.results.items():
        print(f"- {task}: {outcome}")
    print(result.state.output)


if __name__ == "__main__":
    asyncio.run(main())
