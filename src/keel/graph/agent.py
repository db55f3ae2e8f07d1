"""The agent loop: model -> tool calls -> model, until a final answer or the step limit.

Tool calls of one model turn run concurrently; each result (or structured error) goes back to the
model as a tool message, so a failing tool never ends the run by itself.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace

from keel.errors import BudgetExceeded, StepLimitError, ToolNotFoundError
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
from keel.observe.conversation import conversation
from keel.tools.registry import ToolRegistry, ToolResult

if TYPE_CHECKING:
    from keel.guard.guard import Guard

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
        guard: Guard | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.model = model
        self.tools = tools if tools is not None else ToolRegistry()
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.settings = settings
        self.name = name
        self.guard = guard
        """A ``keel.guard.Guard``: labels, policy on each call (``ask`` goes to its approver)."""

    async def run(self, prompt: str | Sequence[Message]) -> AgentResult:
        """Run until the model answers without calling a tool; ``StepLimitError`` otherwise."""
        # A run is its own conversation unless the caller opened one (keel.observe.conversation).
        with (
            conversation(uuid.uuid4().hex),
            _tracer.start_as_current_span(f"invoke_agent {self.name}") as span,
        ):
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
                try:
                    response = await self.model.request(
                        messages, tools=definitions, settings=self.settings
                    )
                except BudgetExceeded as e:  # the run ends; what it did so far is kept
                    e.state = self._partial(messages, results, usage, step - 1)
                    raise
                usage = usage + response.usage
                reply = response.message
                if self.guard is not None:  # a reply derives from everything the model saw
                    from keel.guard.provenance import context_label

                    reply = reply.model_copy(update={"provenance": context_label(messages)})
                messages.append(reply)
                calls = response.message.tool_calls
                if not calls:
                    span.set_attribute(sc.KEEL_AGENT_STEPS, step)
                    text = response.message.text
                    return AgentResult(
                        output=self.guard.finish(text) if self.guard is not None else text,
                        messages=tuple(messages),
                        tool_results=tuple(results),
                        usage=usage,
                        steps=step,
                        model_name=response.model_name,
                    )
                seen = tuple(messages)
                try:
                    outcomes = await asyncio.gather(*(self._call(c, done, seen) for c in calls))
                except BudgetExceeded as e:
                    e.state = self._partial(messages, results, usage, step)
                    raise
                results.extend(outcomes)
                if self.guard is None:
                    messages.extend(r.to_message() for r in outcomes)
                else:
                    messages.extend([await self.guard.admit(r.to_message()) for r in outcomes])
            span.set_attribute(sc.KEEL_AGENT_STEPS, self.max_steps)
            raise StepLimitError(
                f"agent {self.name!r} made {self.max_steps} model calls without a final answer",
                hint="raise max_steps, or give the model fewer or clearer tools",
            )

    def _partial(
        self, messages: list[Message], results: list[ToolResult], usage: Usage, steps: int
    ) -> AgentResult:
        """What a run stopped by its budget did so far (``BudgetExceeded.state``)."""
        return AgentResult(
            output="",
            messages=tuple(messages),
            tool_results=tuple(results),
            usage=usage,
            steps=steps,
            model_name=self.model.name,
        )

    async def _call(
        self, call: ToolCallPart, done: dict[str, ToolResult], seen: Sequence[Message] = ()
    ) -> ToolResult:
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
        if self.guard is not None:
            refused = await self._review(call, seen)
            if refused is not None:
                return refused
        result = await self.tools.call(call)
        if result.ok:
            done[key] = result
        return result

    async def _review(self, call: ToolCallPart, seen: Sequence[Message]) -> ToolResult | None:
        """The guard's refusal of ``call`` as a result, or None when it may run."""
        assert self.guard is not None
        try:
            tool = self.tools.get(call.name)
        except ToolNotFoundError:
            tool = None
        verdict = await self.guard.review_in_context(call, tool, seen)
        if verdict.decision == "allow":
            return None
        if verdict.decision == "ask" and await self.guard.ask_approver(call, verdict):
            return None
        message = ""
        if verdict.decision == "ask":
            message = f"a human did not approve this call: {verdict.explain()}"
        return ToolResult(call.id, call.name, error=self.guard.failure(verdict, message=message))
