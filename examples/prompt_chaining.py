"""Prompt chaining with a gate: outline -> (gate: the outline has 3 points) -> write.

Runs offline with a scripted model: python examples/prompt_chaining.py
Draw it: keel graph show examples.prompt_chaining:graph
"""

import asyncio

from keel.graph.patterns import prompt_chain
from keel.llm.testing import ScriptedModel

STEPS = [
    ("outline", "Write a three-point outline for a post about {input}."),
    ("write", "Write the post from this outline:\n{input}"),
]
model = ScriptedModel(
    [
        "1. What a checkpoint is\n2. Why WAL mode\n3. Resuming after a crash",
        "Checkpoints make agents durable: ...",
    ]
)
graph = prompt_chain(model, STEPS, gates={"outline": lambda text: text.count("\n") >= 2})


async def main() -> None:
    result = await graph.compile().run({"input": "durable agents"})
    print("stopped:", result.state.stopped)
    print(result.state.output)


if __name__ == "__main__":
    asyncio.run(main())
