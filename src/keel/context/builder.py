"""``ContextBuilder``: the prompt for one model call, assembled under the model's token budget.

What goes in, by priority: the system prompt and the plan (always), the current request (always;
cut in the middle only if it alone would not fit), retrieved memory (up to a share of the
budget, best first), then the conversation history, newest first, with each tool result capped.
History that no longer fits slides out of the window; with a ``Summarizer`` the turns that slid
out are folded into a running summary, which the caller keeps and passes back next time.

Retrieved memory is placed at both edges (see ``keel.context.placement``): the best items right
after the system prompt, the next best just before the current request.

Counts come from the model (``Model.count_text_tokens``: the model's own tokenizer for local
models, else an estimate), and the finished prompt is counted once more as a whole with
``Model.count_tokens``; if the template made it larger than planned, the oldest turns go until
it fits. A prompt that cannot fit raises ``ContextOverflowError``, never a provider error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from keel.context.placement import RetrievedItem, split_edges, truncate_to_tokens
from keel.context.summary import Summarizer, Summary
from keel.errors import ConfigError, ContextOverflowError
from keel.llm.base import Model
from keel.llm.messages import (
    Message,
    SystemMessage,
    ToolDefinition,
    ToolMessage,
    UserMessage,
)
from keel.llm.tokens import MESSAGE_OVERHEAD_TOKENS, message_text

__all__ = ["BuiltContext", "ContextBuilder"]


@dataclass(frozen=True)
class BuiltContext:
    """The assembled prompt and what was kept, cut or summarised to fit it."""

    messages: list[Message]
    tokens: int
    budget: int
    summary: Summary
    history_kept: int
    history_dropped: int
    memory_kept: int
    tool_results_truncated: int


@dataclass
class _Plan:
    system: str
    window: list[Message]
    start: list[RetrievedItem]
    end: list[RetrievedItem]
    current: UserMessage | None
    summary: Summary


class ContextBuilder:
    """Builds prompts for ``model`` that leave ``reserve_output`` tokens for the answer."""

    def __init__(
        self,
        model: Model,
        *,
        context_window: int | None = None,
        reserve_output: int = 256,
        summarizer: Summarizer | None = None,
        memory_share: float = 0.35,
        tool_result_max_tokens: int = 400,
        summary_slack: float = 0.3,
    ) -> None:
        window = context_window or model.context_window
        if window is None:
            raise ConfigError(
                f"the context window of {model.name} is unknown",
                hint="pass context_window= to ContextBuilder",
            )
        if reserve_output >= window:
            raise ConfigError(f"reserve_output ({reserve_output}) must be below {window}")
        if not 0 <= memory_share <= 1 or not 0 <= summary_slack < 1:
            raise ConfigError("memory_share must be in [0, 1] and summary_slack in [0, 1)")
        self.model = model
        self.context_window = window
        self.reserve_output = reserve_output
        self.summarizer = summarizer
        self.memory_share = memory_share
        self.tool_result_max_tokens = tool_result_max_tokens
        self.summary_slack = summary_slack
        self._cache: dict[str, int] = {}

    @property
    def budget(self) -> int:
        """Tokens the prompt may take: the window less the room kept for the answer."""
        return self.context_window - self.reserve_output

    async def _count(self, text: str) -> int:
        if text not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[text] = await self.model.count_text_tokens(text)
        return self._cache[text]

    async def _cost(self, message: Message) -> int:
        return await self._count(message_text(message)) + MESSAGE_OVERHEAD_TOKENS

    async def _cap_tool_results(self, messages: Sequence[Message]) -> tuple[list[Message], int]:
        capped: list[Message] = []
        truncated = 0
        for m in messages:
            if isinstance(m, ToolMessage):
                text = await truncate_to_tokens(m.content, self.tool_result_max_tokens, self._count)
                if text != m.content:
                    truncated += 1
                    m = m.model_copy(update={"content": text})
            capped.append(m)
        return capped, truncated

    async def _fit_memory(self, memory: Sequence[RetrievedItem], room: int) -> list[RetrievedItem]:
        kept: list[RetrievedItem] = []
        used = 0
        for item in sorted(memory, key=lambda i: i.score, reverse=True):
            cost = await self._count(item.render()) + 2
            if used + cost <= room:
                kept.append(item)
                used += cost
        return kept

    async def _window_start(self, past: Sequence[Message], room: int) -> int:
        """Index of the oldest message of ``past`` that fits, newest first, in ``room`` tokens."""
        start = len(past)
        used = 0
        while start > 0:
            cost = await self._cost(past[start - 1])
            if used + cost > room:
                break
            used += cost
            start -= 1
        return _skip_orphans(past, start)

    def _assemble(self, plan: _Plan) -> list[Message]:
        system = plan.system
        if plan.start:
            system += "\n\nRelevant information:\n" + "\n".join(i.render() for i in plan.start)
        if plan.summary.text:
            system += "\n\nSummary of the earlier conversation:\n" + plan.summary.text
        messages: list[Message] = [SystemMessage(content=system), *plan.window]
        end = "\n".join(i.render() for i in plan.end)
        if plan.current is not None:
            content = plan.current.content
            if end:
                content = f"Relevant information:\n{end}\n\n{content}"
            messages.append(UserMessage(content=content))
        elif end:
            messages.append(UserMessage(content=f"Relevant information:\n{end}"))
        return messages

    async def build(
        self,
        system: str,
        history: Sequence[Message],
        *,
        plan: str | None = None,
        memory: Sequence[RetrievedItem] = (),
        tools: Sequence[ToolDefinition] = (),
        summary: Summary | None = None,
    ) -> BuiltContext:
        """The prompt for the next call on ``history`` (oldest first; a trailing user message is
        the current request). Pass back ``BuiltContext.summary`` on the next call."""
        summary = summary or Summary()
        if summary.covered > len(history):
            raise ConfigError("the summary covers more messages than the history has")
        current = history[-1] if history and isinstance(history[-1], UserMessage) else None
        past, truncated = await self._cap_tool_results(
            history[summary.covered : len(history) - (current is not None)]
        )
        system_text = system if not plan else f"{system}\n\nPlan:\n{plan}"
        tools_cost = sum([await self._count(json.dumps(t.model_dump())) for t in tools])
        summary_room = self.summarizer.max_tokens if self.summarizer else 0
        if summary.text:
            summary_room = max(summary_room, await self._count(summary.text))
        fixed = await self._count(system_text) + 2 * MESSAGE_OVERHEAD_TOKENS + 16
        fixed += tools_cost + summary_room
        if current is not None:
            room = self.budget - fixed
            content = await truncate_to_tokens(current.content, room, self._count)
            if not content:
                raise ContextOverflowError(
                    f"the system prompt, plan and tools take {fixed} of {self.budget} tokens: "
                    "no room is left for the request",
                    hint="shorten the system prompt or plan, or use a model with a larger window",
                )
            current = UserMessage(content=content)
            fixed += await self._cost(current)
        if fixed > self.budget:
            raise ContextOverflowError(
                f"the system prompt, plan and tools need {fixed} of {self.budget} tokens",
                hint="shorten the system prompt or plan, or use a model with a larger window",
            )
        room = self.budget - fixed
        kept_memory = await self._fit_memory(memory, int(room * self.memory_share))
        room -= sum([await self._count(i.render()) + 2 for i in kept_memory])
        start = await self._window_start(past, room)
        if start > 0 and self.summarizer is not None:
            # Slide further than needed, so the next turns fit without another summary call.
            start = max(start, await self._window_start(past, int(room * (1 - self.summary_slack))))
            summary = await self.summarizer.update(summary, past[:start])
            past, start = past[start:], 0
        start_items, end_items = split_edges(kept_memory)
        layout = _Plan(system_text, list(past[start:]), start_items, end_items, current, summary)
        messages = self._assemble(layout)
        tokens = await self.model.count_tokens(messages, tools=tools)
        while tokens > self.budget:
            if layout.window:
                layout.window = layout.window[_skip_orphans(layout.window, 1) :]
            elif layout.start or layout.end:
                longer = layout.end if len(layout.end) >= len(layout.start) else layout.start
                longer.pop(0 if longer is layout.end else -1)
            else:
                raise ContextOverflowError(
                    f"the prompt takes {tokens} tokens, over the budget of {self.budget}",
                    hint="shorten the system prompt, plan or request",
                )
            messages = self._assemble(layout)
            tokens = await self.model.count_tokens(messages, tools=tools)
        return BuiltContext(
            messages=messages,
            tokens=tokens,
            budget=self.budget,
            summary=layout.summary,
            history_kept=len(layout.window),
            history_dropped=len(history) - (current is not None) - len(layout.window),
            memory_kept=len(layout.start) + len(layout.end),
            tool_results_truncated=truncated,
        )


def _skip_orphans(messages: Sequence[Message], start: int) -> int:
    """Move ``start`` past tool results whose call was cut off, so the window opens cleanly."""
    while start < len(messages) and isinstance(messages[start], ToolMessage):
        start += 1
    return start
