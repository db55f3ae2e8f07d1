"""Routing: a classifier picks a route, a specialised handler answers.

Runs offline with scripted models: python examples/routing.py
"""

import asyncio

from keel.graph.patterns import router
from keel.llm.testing import ScriptedModel

graph = router(
    ScriptedModel(["billing"]),
    {
        "billing": ScriptedModel(["A refund for the double charge is on its way."]),
        "technical": ScriptedModel([]),
        "general": lambda state: {"output": "Thanks, we will get back to you."},
    },
    default="general",
)


async def main() -> None:
    result = await graph.compile().run({"input": "I was charged twice this month"})
    print(f"route={result.state.route}: {result.state.output}")


if __name__ == "__main__":
    asyncio.run(main())
