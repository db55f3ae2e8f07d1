"""The agent loop: model -> tool calls -> model, until a final answer or the step limit.

Tool calls of one model turn run concurrently; each result (or structured error) goes back to the
model as a tool message, so a failing tool never ends the run by itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import trace

from keel.errors import StepLimitError
from keel.llm.base import Model
from keel.llm.messages import (
    Message,
    ModelSettings,
    SystemMessage,
    ToolCallPart,
    Usage,
    UserMessage,
)
from keel.observe import semconv as sc
from keel.tools.registry import ToolRegistry, ToolResult

__all__ = ["Agent", "AgentResult"]

_tracer = trace.get_tracer("keel.graph")


@dataclass(frozen=True)
class AgentResult:
    """The final answer and everything that led to it."""

    output: str
    messages: tuple[Message, ...]
    tool_results: tuple[ToolResult, ...]
    usage: Usage
    steps: int
    model_name: str


class Agent:
    """A model with tools and a system prompt; ``run`` drives the loop."""

    def __init__(
        self,
        model: Model,
        tools: ToolRegistry | None = None,
        *,
        system_prompt: str = "",
        max_steps: int = 8,
        settings: ModelSettings | None = None,
        name: str = "agent",
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.model = model
        self.tools = tools if tools is not None else ToolRegistry()
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.settings = settings
        self.name = name

    async def run(self, prompt: str | Sequence[Message]) -> AgentResult:
        """Run until the model answers without calling a tool; ``StepLimitError`` otherwise."""
        with _tracer.start_as_current_span(f"invoke_agent {self.name}") as span:
            span.set_attribute(sc.GEN_AI_OPERATION_NAME, sc.OPERATION_INVOKE_AGENT)
            span.set_attribute(sc.GEN_AI_AGENT_NAME, self.name)
            span.set_attribute(sc.GEN_AI_REQUEST_MODEL, self.model.name)
            messages: list[Message] = []
            if self.system_prompt:
                messages.append(SystemMessage(content=self.system_prompt))
            if isinstance(prompt, str):
                messages.append(UserMessage(content=prompt))
            else:
                messages.extend(prompt)
            definitions = self.tools.definitions()
            results: list[ToolResult] = []
            done: dict[str, ToolResult] = {}
            usage = Usage()
            for step in range(1, self.max_steps + 1):
                response = await self.model.request(
                    messages, tools=definitions, settings=self.settings
                )
                usage = usage + response.usage
                messages.append(response.message)
                calls = response.message.tool_calls
                if not calls:
                    span.set_attribute(sc.KEEL_AGENT_STEPS, step)
                    return AgentResult(
                        output=response.message.text,
                        messages=tuple(messages),
                        tool_results=tuple(results),
                        usage=usage,
                        steps=step,
                        model_name=response.model_name,
                    )
                outcomes = await asyncio.gather(*(self._call(c, done) for c in calls))
                results.extend(outcomes)
                messages.extend(r.to_message() for r in outcomes)
            span.set_attribute(sc.KEEL_AGENT_STEPS, self.max_steps)
            raise StepLimitError(
                f"agent {self.name!r} made {self.max_steps} model calls without a final answer",
                hint="raise max_steps, or give the model fewer or clearer tools",
            )

    async def _call(self, call: ToolCallPart, done: dict[str, ToolResult]) -> ToolResult:
        """Run a call, unless this run already made the same call successfully.

        A repeated call is not run again (it may have side effects); the model gets its earlier
        result back with a structured ``repeated_call`` error, which is what small models that
        loop on a tool need to move on to an answer.
        """
        key = json.dumps([call.name, call.arguments], sort_keys=True, default=str)
        earlier = done.get(key)
        if earlier is not None:
            message = (
                f"{call.name} was already called with these arguments and returned: "
                f"{earlier.content()}\nUse that result instead of calling it again."
            )
            error = {"type": "repeated_call", "message": message}
            return ToolResult(call.id, call.name, error=error)
        result = await self.tools.call(call)
        if result.ok:
            done[key] = result
        return result
