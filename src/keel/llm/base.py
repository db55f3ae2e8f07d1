"""The ``Model`` protocol: one required method, ``request``; streaming has a default."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

from keel.llm.messages import (
    Message,
    ModelSettings,
    Response,
    ResponseDone,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolDefinition,
)
from keel.llm.tokens import estimate_message_tokens, estimate_tokens

__all__ = ["Model"]


class Model(ABC):
    """A language model behind Keel's neutral message types.

    ``output_schema`` is a JSON schema the answer text must follow (backends that can constrain
    decoding do so); validating it into a Python object is the caller's job (see
    ``keel.llm.structured``). Tool calls come back as ``ToolCallPart``s and are data: the model
    never runs them.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """A short name for traces and output, e.g. ``SmolLM2-135M-Instruct.Q4_1``."""

    @abstractmethod
    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        """Send a conversation and return the model's answer."""

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream the answer as deltas, ending with ``ResponseDone``.

        The default makes one ``request`` and replays it as deltas; backends that can stream
        token by token override it.
        """
        response = await self.request(
            messages, tools=tools, output_schema=output_schema, settings=settings
        )
        index = 0
        for part in response.message.parts:
            if isinstance(part, TextPart):
                yield TextDelta(text=part.text)
            else:
                yield ToolCallDelta(
                    index=index,
                    id=part.id,
                    name=part.name,
                    arguments_delta=json.dumps(part.arguments),
                )
                index += 1
        yield ResponseDone(response=response)

    @property
    def context_window(self) -> int | None:
        """Tokens the model accepts in one call (prompt plus answer), when known."""
        return None

    async def count_text_tokens(self, text: str) -> int:
        """Tokens ``text`` takes for this model; the default is a documented high estimate."""
        return estimate_tokens(text)

    async def count_tokens(
        self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()
    ) -> int:
        """Tokens the prompt for ``messages`` takes, template included (an estimate by default)."""
        extra = sum(estimate_tokens(json.dumps(t.model_dump())) for t in tools)
        return estimate_message_tokens(messages) + extra

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most models hold nothing
        """Release what the model holds (weights, connections)."""
