"""The agent loop as a graph: model -> tools -> model, with a stop the model cannot argue with.

The number of model turns and the tokens spent live in the state, and a router (not the model)
ends the run when either runs out, so no reply can extend it. Tool calls that have side effects
are journalled (a resumed run does not repeat them); calls to tools that require approval pause
the run until a human answers ``{"approved": bool, "arguments": {...} (optional)}``. A model that
keeps failing after its retries ends the run with a structured error instead of an exception.

Every request goes through a ``keel.context.ContextBuilder`` (on by default), so a long run never
sends more than the model's context window: tool results are capped, old turns slide out (and are
folded into a running summary when the builder has a ``Summarizer``), retrieved memory goes to the
edges, and the system prompt and the latest user request are always sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from keel.context import BuiltContext, ContextBuilder, RetrievedItem, Summary
from keel.errors import ConfigError, ToolNotFoundError
from keel.graph.builder import END, START, Graph, RetryPolicy
from keel.graph.runtime import RunContext, has_side_effect
from keel.graph.state import GraphState, append
from keel.llm.base import Model
from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    ResponseDone,
    SystemMessage,
    TextDelta,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)
from keel.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from keel.guard.guard import Guard

__all__ = ["DEFAULT_CONTEXT_WINDOW", "AgentState", "agent_graph", "conversation"]

DEFAULT_CONTEXT_WINDOW = 8192
"""The window assumed for a model that does not declare its ``context_window``."""


class AgentState(GraphState):
    """The conversation, turns taken, tokens spent, and why the run stopped."""

    messages: Annotated[list[Message], append] = Field(default_factory=list)
    turns: int = 0
    usage: Usage = Field(default_factory=Usage)
    output: str = ""
    stopped: str = ""
    """``answer``, ``max_turns``, ``budget`` or ``model_error``."""
    memory: list[RetrievedItem] = Field(default_factory=list)
    """Retrieved material for this run, placed at the edges of every prompt."""
    summary: Summary = Field(default_factory=Summary)
    """The running summary of turns that slid out of the window (kept so a resume reuses it)."""


def agent_graph(
    model: Model,
    tools: ToolRegistry | None = None,
    *,
    max_turns: int = 8,
    token_budget: int | None = None,
    approve: Collection[str] = (),
    settings: ModelSettings | None = None,
    model_retry: RetryPolicy | None = None,
    context: ContextBuilder | Literal[False] | None = None,
    name: str = "agent",
    guard: Guard | None = None,
) -> Graph[AgentState]:
    """Build the loop; ``compile()`` it (with a checkpointer for durability) and run it with
    ``{"messages": [...]}``. ``approve`` names tools a human must approve before each call.

    ``context`` assembles every request: by default a ``ContextBuilder`` over the model's window
    (``DEFAULT_CONTEXT_WINDOW`` if it declares none) that keeps ``settings.max_tokens`` (or 256)
    free for the answer; pass your own builder (e.g. with a ``Summarizer``), or ``False`` to send
    the whole conversation unchanged.

    ``guard`` (a ``keel.guard.Guard``) labels every reply and tool result with its provenance,
    reviews each tool call against its policy (deny: the model gets a ``policy_denied`` error;
    ask: the run pauses for approval like ``approve``), screens tool results and cleans the
    final answer."""
    if max_turns < 1:
        raise ValueError("max_turns must be at least 1")
    registry = tools if tools is not None else ToolRegistry()
    definitions = registry.definitions()
    builder = _context_builder(model, context, settings)

    async def call_model(state: AgentState, ctx: RunContext) -> dict[str, Any]:
        messages, summary = list(state.messages), state.summary
        if builder is not None:
            messages, summary = await _build_prompt(builder, state, definitions)
        if ctx.streaming:
            response = None
            async for event in model.stream(messages, tools=definitions, settings=settings):
                if isinstance(event, TextDelta):
                    ctx.emit("token", event.text)
                elif isinstance(event, ResponseDone):
                    response = event.response
            if response is None:
                raise RuntimeError(f"{model.name} ended its stream without a response")
        else:
            response = await model.request(messages, tools=definitions, settings=settings)
        update: dict[str, Any] = {
            "messages": [response.message],
            "turns": state.turns + 1,
            "usage": state.usage + response.usage,
        }
        if summary != state.summary:
            update["summary"] = summary
        if guard is not None:  # a reply derives from everything the model was shown
            update["messages"] = [_labelled_reply(response.message, state)]
        if not response.message.tool_calls:
            text = response.message.text
            output = guard.finish(text) if guard is not None else text
            update.update(output=output, stopped="answer")
        return update

    def after_model(state: AgentState) -> str:
        if state.stopped:
            return END
        if token_budget is not None and state.usage.total_tokens >= token_budget:
            return "stop_budget"
        if state.turns >= max_turns:
            return "stop_turns"
        return "tools"

    async def run_tools(state: AgentState, ctx: RunContext) -> dict[str, Any]:
        last = state.messages[-1]
        calls = last.tool_calls if isinstance(last, AssistantMessage) else []
        for call in calls:
            ctx.emit("tool_call", call)
        decided: list[ToolCallPart | ToolMessage] = []
        for call in calls:  # ask for approvals one by one, before anything runs
            if guard is not None:
                decided.append(await _guarded(call, registry, approve, ctx, guard, state))
            else:
                decided.append(await _approve(call, registry, approve, ctx))

        async def settle(d: ToolCallPart | ToolMessage) -> ToolMessage:
            result = d if isinstance(d, ToolMessage) else await _execute(d, registry, ctx)
            return result if guard is None else await guard.admit(result)

        # Every call finishes (and is journalled) before a failure of one (e.g. a budget
        # refusal) ends the step, so a resumed step does not repeat its siblings' effects.
        outcomes = await asyncio.gather(*(settle(d) for d in decided), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        results = [o for o in outcomes if isinstance(o, ToolMessage)]
        for r in results:
            ctx.emit("tool_result", r)
        return {"messages": results}

    def give_up(state: AgentState) -> dict[str, Any]:
        failure = state.errors[-1]
        return {"stopped": "model_error", "output": f"error: {failure.type}: {failure.message}"}

    def stop_turns(state: AgentState) -> dict[str, Any]:
        return {"stopped": "max_turns"}

    def stop_budget(state: AgentState) -> dict[str, Any]:
        return {"stopped": "budget"}

    graph = Graph(AgentState, name=name)
    graph.add_node("model", call_model, retry=model_retry, fallback="give_up")
    graph.add_node("tools", run_tools)
    graph.add_node("give_up", give_up)
    graph.add_node("stop_turns", stop_turns)
    graph.add_node("stop_budget", stop_budget)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", after_model, ["tools", "stop_turns", "stop_budget", END])
    graph.add_edge("tools", "model")
    for node in ("give_up", "stop_turns", "stop_budget"):
        graph.add_edge(node, END)
    return graph


def _context_builder(
    model: Model, context: ContextBuilder | Literal[False] | None, settings: ModelSettings | None
) -> ContextBuilder | None:
    """The builder ``agent_graph`` uses: the one given, a default one, or None when turned off."""
    answer = settings.max_tokens if settings is not None and settings.max_tokens else None
    if context is False:
        return None
    if context is None:
        window = model.context_window or DEFAULT_CONTEXT_WINDOW
        return ContextBuilder(model, context_window=window, reserve_output=answer or 256)
    if answer is not None and answer > context.reserve_output:
        raise ConfigError(
            f"settings.max_tokens ({answer}) is more than the builder keeps free for the answer "
            f"({context.reserve_output}), so a full prompt plus the answer could overflow",
            hint="raise the builder's reserve_output or lower max_tokens",
        )
    return context


async def _build_prompt(
    builder: ContextBuilder, state: AgentState, tools: Sequence[ToolDefinition]
) -> tuple[list[Message], Summary]:
    """The request for the next turn, within the builder's budget, and the updated summary.

    The builder keeps a trailing user message whatever happens, so the latest request is handed
    to it last, after the tool exchange that followed it; then it is put back in its place
    (before that exchange) as long as the prompt still counts within the budget.
    """
    system = "\n\n".join(m.content for m in state.messages if isinstance(m, SystemMessage))
    rest = [m for m in state.messages if not isinstance(m, SystemMessage)]
    asked = [i for i, m in enumerate(rest) if isinstance(m, UserMessage)]
    after = rest[asked[-1] + 1 :] if asked else []
    history = [*rest[: asked[-1]], *after, rest[asked[-1]]] if asked else rest
    built = await builder.build(
        system, history, memory=state.memory, tools=tools, summary=state.summary
    )
    messages = built.messages
    if after:
        reordered = _chronological(built, len(after))
        if await builder.model.count_tokens(reordered, tools=tools) <= builder.budget:
            messages = reordered
    if not system and isinstance(messages[0], SystemMessage) and not messages[0].content:
        messages = messages[1:]  # no system prompt was given: do not send an empty one
    return messages, built.summary


def _chronological(built: BuiltContext, exchanged: int) -> list[Message]:
    """``built.messages`` with its trailing request moved before the last ``exchanged``
    history messages it kept (the builder's window is a suffix of the history it was given)."""
    messages = built.messages
    at = len(messages) - 1 - min(exchanged, built.history_kept)
    return [*messages[:at], messages[-1], *messages[at:-1]]


def _lookup(registry: ToolRegistry, name: str) -> Any:
    try:
        return registry.get(name)
    except ToolNotFoundError:
        return None


def _needs_approval(registry: ToolRegistry, approve: Collection[str], name: str) -> bool:
    tool = _lookup(registry, name)
    return name in approve or bool(getattr(tool, "requires_approval", False))


def _journalled(registry: ToolRegistry, name: str) -> bool:
    """Whether a call has side effects: declared in the tools layer or marked ``@side_effect``."""
    tool = _lookup(registry, name)
    if tool is None:
        return False
    return bool(getattr(tool, "has_side_effects", False)) or has_side_effect(tool.handler)


def _labelled_reply(message: AssistantMessage, state: AgentState) -> AssistantMessage:
    from opentelemetry import trace

    from keel.guard.provenance import context_label, document
    from keel.observe.semconv import KEEL_GUARD_LABEL

    memory = [document(item.source or "memory") for item in state.memory]
    label = context_label(state.messages, memory)
    trace.get_current_span().set_attribute(
        KEEL_GUARD_LABEL, "trusted" if label.trusted else "untrusted"
    )
    return message.model_copy(update={"provenance": label})


async def _guarded(
    call: ToolCallPart,
    registry: ToolRegistry,
    approve: Collection[str],
    ctx: RunContext,
    guard: Guard,
    state: AgentState,
) -> ToolCallPart | ToolMessage:
    """The guard's verdict on ``call``: run it, ask a human first, or a denial for the model."""
    from keel.guard.provenance import document

    memory = [document(item.source or "memory") for item in state.memory]
    verdict = await guard.review_in_context(
        call, _lookup(registry, call.name), state.messages, memory
    )
    if verdict.decision == "deny":
        return guard.denial(call, verdict)
    request = guard.approval_request(call, verdict) if verdict.decision == "ask" else None
    return await _approve(call, registry, approve, ctx, request)


async def _approve(
    call: ToolCallPart,
    registry: ToolRegistry,
    approve: Collection[str],
    ctx: RunContext,
    request: dict[str, Any] | None = None,
) -> ToolCallPart | ToolMessage:
    """The call to run (maybe with edited arguments), or a ``denied`` result for the model.

    ``request`` (from the guard) asks a human even if the tool needs no approval itself."""
    if request is None and not _needs_approval(registry, approve, call.name):
        return call
    request = request or {"tool": call.name, "arguments": call.arguments, "id": call.id}
    answer = await ctx.interrupt(request)
    if not isinstance(answer, dict) or not answer.get("approved"):
        reason = answer.get("reason", "") if isinstance(answer, dict) else ""
        message = f"a human did not approve this call to {call.name}" + (
            f": {reason}" if reason else ""
        )
        content = json.dumps({"error": {"type": "denied", "message": message}})
        return ToolMessage(tool_call_id=call.id, name=call.name, content=content, is_error=True)
    arguments = answer.get("arguments")
    return call.model_copy(update={"arguments": arguments}) if isinstance(arguments, dict) else call


async def _execute(call: ToolCallPart, registry: ToolRegistry, ctx: RunContext) -> ToolMessage:
    async def run() -> ToolMessage:
        return (await registry.call(call)).to_message()

    if _journalled(registry, call.name):
        result: ToolMessage = await ctx.effect(run, result_type=ToolMessage)
        return result
    return await run()


def conversation(prompt: str | Sequence[Message], system_prompt: str = "") -> list[Message]:
    """The opening messages for ``agent_graph``: an optional system prompt and the user's turn."""
    messages: list[Message] = [SystemMessage(content=system_prompt)] if system_prompt else []
    if isinstance(prompt, str):
        messages.append(UserMessage(content=prompt))
    else:
        messages.extend(prompt)
    return messages
