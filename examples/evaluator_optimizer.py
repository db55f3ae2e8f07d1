"""Evaluator-optimizer: generate, critique, revise until accepted or out of rounds.

Runs offline: python examples/evaluator_optimizer.py
"""

import asyncio

from keel.graph.patterns import evaluator_optimizer
from keel.llm.testing import ScriptedModel

generator = ScriptedModel(["Checkpoints save state.", "Checkpoints save state after every step."])
evaluator = ScriptedModel(["Say when they are saved.", "ACCEPT"])
graph = evaluator_optimizer(generator, evaluator, max_rounds=3)


async def main() -> None:
    result = await graph.compile().run({"task": "Explain checkpoints in one sentence."})
    print(f"accepted={result.state.accepted} after {result.state.rounds} rounds")
    print(result.state.draft)


if __name__ == "__main__":
    asyncio.run(main())
