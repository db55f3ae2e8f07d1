"""Handoff between agents: each agent may pass the conversation to another by calling a
``transfer_to_<name>`` tool; the one holding it answers, calls its own tools, or hands off again.

The conversation is shared (each agent adds its own system prompt in front); a turn limit in
the state ends the run however the agents behave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from keel.graph.builder import END, START, Graph
from keel.graph.loop import _execute
from keel.graph.runtime import RunContext
from keel.graph.state import GraphState, append
from keel.llm.base import Model
from keel.llm.messages import Message, SystemMessage, ToolDefinition, ToolMessage
from keel.tools.registry import ToolRegistry

__all__ = ["HandoffAgent", "HandoffState", "handoff"]

PREFIX = "transfer_to_"


@dataclass(frozen=True)
class HandoffAgent:
    """An agent in a handoff graph and the agents it may pass the conversation to."""

    name: str
    model: Model
    instructions: str = ""
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    handoffs: tuple[str, ...] = ()


class HandoffState(GraphState):
    """The shared conversation, who holds it, the trail of holders and the final answer."""

    messages: Annotated[list[Message], append] = Field(default_factory=list)
    active: str = ""
    trail: Annotated[list[str], append] = Field(default_factory=list)
    turns: int = 0
    output: str = ""
    stopped: str = ""


def handoff(
    agents: Sequence[HandoffAgent], *, max_turns: int = 12, name: str = "handoff"
) -> Graph[HandoffState]:
    """A graph where ``agents[0]`` starts and any agent may transfer to those it names."""
    if not agents:
        raise ValueError("a handoff needs at least one agent")
    by_name = {a.name: a for a in agents}
    for a in agents:
        unknown = [t for t in a.handoffs if t not in by_name]
        if unknown:
            raise ValueError(f"agent {a.name!r} hands off to unknown agents {unknown}")
    graph = Graph(HandoffState, name=name)
    for agent in agents:
        graph.add_node(agent.name, _agent_node(agent, max_turns))
    graph.add_node("stop", lambda s: {"stopped": "max_turns"})
    graph.add_edge("stop", END)

    def route(state: HandoffState) -> str:
        if state.stopped:
            return END
        return "stop" if state.turns >= max_turns else state.active

    for agent in agents:
        graph.add_conditional_edges(agent.name, route, [*by_name, "stop", END])
    graph.add_edge(START, agents[0].name)
    return graph


def _agent_node(agent: HandoffAgent, max_turns: int) -> Any:
    transfers = [
        ToolDefinition(
            name=f"{PREFIX}{target}",
            description=f"Hand the conversation to the {target} agent.",
            parameters={"type": "object", "properties": {}},
        )
        for target in agent.handoffs
    ]
    definitions = agent.tools.definitions() + transfers

    async def node(state: HandoffState, ctx: RunContext) -> dict[str, Any]:
        system = [SystemMessage(content=agent.instructions)] if agent.instructions else []
        response = await agent.model.request([*system, *state.messages], tools=definitions)
        update: dict[str, Any] = {
            "messages": [response.message],
            "turns": state.turns + 1,
            "active": agent.name,
        }
        trail = [] if state.trail else [agent.name]
        update["trail"] = trail
        calls = response.message.tool_calls
        if not calls:
            update.update(output=response.message.text, stopped="answer")
            return update
        results: list[ToolMessage] = []
        for call in calls:
            target = call.name.removeprefix(PREFIX)
            if call.name.startswith(PREFIX) and target in agent.handoffs:
                update["active"] = target
                trail.append(target)
                content = f"transferred to {target}"
                results.append(ToolMessage(tool_call_id=call.id, name=call.name, content=content))
            else:
                results.append(await _execute(call, agent.tools, ctx))
        update["messages"].extend(results)
        return update

    return node
