"""Parallelization: sectioning (independent parts at once) and voting (same question N times).

Runs offline with function models: python examples/parallelization.py
"""

import asyncio

from keel.graph.patterns import sectioning, voting
from keel.llm.testing import FunctionModel, ModelCall


async def reviewer(call: ModelCall) -> str:
    await asyncio.sleep(0.01)  # the sections really run at the same time
    return f"looked at: {call.last_user_text}"


answers = iter(["SAFE", "unsafe", "safe"])
sections = {
    "security": "Review {input} for security problems.",
    "style": "Review {input} for style.",
}
graph = sectioning(FunctionModel(reviewer), sections)
vote_graph = voting(FunctionModel(lambda call: next(answers)), "Is {input} safe?", voters=3)


async def main() -> None:
    review = await graph.compile().run({"input": "the patch"})
    print(review.state.output)
    vote = await vote_graph.compile().run({"input": "the patch"})
    print("majority:", vote.state.output, dict(vote.state.results))


if __name__ == "__main__":
    asyncio.run(main())
