"""Handoff: a triage agent passes the conversation to a billing agent, which uses its tool.

Runs offline: python examples/handoff.py
"""

import asyncio

from keel.graph.handoff import HandoffAgent, handoff
from keel.graph.loop import conversation
from keel.llm.testing import ScriptedModel, tool_call
from keel.tools import ToolRegistry

billing_tools = ToolRegistry()


@billing_tools.tool
def refund(order: str) -> str:
    """Refund an order."""
    return f"order {order} refunded"


triage = HandoffAgent(
    "triage",
    ScriptedModel([tool_call("transfer_to_billing")]),
    "Send billing questions to billing.",
    handoffs=("billing",),
)
billing = HandoffAgent(
    "billing",
    ScriptedModel([tool_call("refund", order="A17"), "Done: order A17 is refunded."]),
    "You handle refunds.",
    billing_tools,
)
graph = handoff([triage, billing])


async def main() -> None:
    result = await graph.compile().run({"messages": conversation("Please refund order A17")})
    print(" -> ".join(result.state.trail))
    print(result.state.output)


if __name__ == "__main__":
    asyncio.run(main())
