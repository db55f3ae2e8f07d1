"""``WrapperModel``: the base of every wrapper (retry, timeout, fallback, tracing).

It forwards everything to the wrapped model, so a wrapper overrides only what it changes and a
stack of wrappers still reports the inner model's name, context window and token counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from keel.llm.base import Model
from keel.llm.messages import Message, ModelSettings, Response, StreamEvent, ToolDefinition

__all__ = ["WrapperModel"]


class WrapperModel(Model):
    """A ``Model`` that delegates to ``wrapped``; subclasses add behaviour around the calls."""

    def __init__(self, wrapped: Model) -> None:
        self.wrapped = wrapped

    @property
    def name(self) -> str:
        return self.wrapped.name

    @property
    def context_window(self) -> int | None:
        return self.wrapped.context_window

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        return await self.wrapped.request(
            messages, tools=tools, output_schema=output_schema, settings=settings
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        async for event in self.wrapped.stream(
            messages, tools=tools, output_schema=output_schema, settings=settings
        ):
            yield event

    async def count_text_tokens(self, text: str) -> int:
        return await self.wrapped.count_text_tokens(text)

    async def count_tokens(
        self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()
    ) -> int:
        return await self.wrapped.count_tokens(messages, tools=tools)

    async def aclose(self) -> None:
        await self.wrapped.aclose()
