"""Public test doubles: ``ScriptedModel`` plays a script, ``FunctionModel`` calls a function.

Use them to test agents, graphs and tools without a real model. Both record every call so a test
can assert on what the model was sent.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from keel.errors import UnexpectedModelBehavior
from keel.llm.base import Model
from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    Usage,
)

__all__ = ["FunctionModel", "ModelCall", "ScriptedModel", "Step"]


@dataclass(frozen=True)
class ModelCall:
    """What a test double was sent in one call."""

    messages: tuple[Message, ...]
    tools: tuple[ToolDefinition, ...]
    output_schema: dict[str, Any] | None
    settings: ModelSettings | None

    @property
    def last_user_text(self) -> str:
        """Content of the last user message, or '' if there is none."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""


Reply = str | ToolCallPart | Sequence[ToolCallPart] | AssistantMessage | Response | BaseException


@dataclass(frozen=True)
class Step:
    """One scripted reply, optionally with a check on the call that consumes it.

    ``expect`` returns True when the call is the one the script expected; a False makes the call
    fail with ``UnexpectedModelBehavior``, so a test notices a conversation that went astray.
    """

    reply: Reply
    expect: Callable[[ModelCall], bool] | None = None
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))


_ids = itertools.count(1)


def _to_response(reply: Reply, model_name: str, usage: Usage) -> Response:
    if isinstance(reply, Response):
        return reply
    if isinstance(reply, AssistantMessage):
        message = reply
    elif isinstance(reply, str):
        message = AssistantMessage(parts=(TextPart(text=reply),))
    elif isinstance(reply, ToolCallPart):
        message = AssistantMessage(parts=(reply,))
    elif isinstance(reply, Sequence) and all(isinstance(p, ToolCallPart) for p in reply):
        message = AssistantMessage(parts=tuple(p for p in reply if isinstance(p, ToolCallPart)))
    else:
        raise TypeError(f"a model reply cannot be built from {type(reply).__name__}")
    finish = "tool_calls" if message.tool_calls else "stop"
    usage = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, requests=1)
    return Response(message=message, usage=usage, model_name=model_name, finish_reason=finish)


def tool_call(name: str, **arguments: Any) -> ToolCallPart:
    """A ``ToolCallPart`` with a fresh id, for scripts: ``tool_call("search", query="x")``."""
    return ToolCallPart(id=f"call_{next(_ids)}", name=name, arguments=arguments)


class ScriptedModel(Model):
    """Replies with the given steps, in order; fails on a call past the end or unused steps.

    A step is a ``Step`` or anything a ``Step`` reply may be: a string (text), a ``ToolCallPart``
    or a list of them (parallel calls), an ``AssistantMessage``, a ``Response``, or an exception to
    raise. Use it as a context manager (or call ``assert_done()``) to fail when steps are left.
    """

    def __init__(self, steps: Iterable[Step | Reply], *, name: str = "scripted") -> None:
        self._steps = [s if isinstance(s, Step) else Step(s) for s in steps]
        self._name = name
        self.calls: list[ModelCall] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def remaining(self) -> int:
        return len(self._steps) - len(self.calls)

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        call = ModelCall(tuple(messages), tuple(tools), output_schema, settings)
        index = len(self.calls)
        self.calls.append(call)
        if index >= len(self._steps):
            raise UnexpectedModelBehavior(
                f"ScriptedModel got call {index + 1} but the script has {len(self._steps)} steps; "
                f"last user message: {call.last_user_text[:80]!r}"
            )
        step = self._steps[index]
        if step.expect is not None and not step.expect(call):
            raise UnexpectedModelBehavior(
                f"ScriptedModel step {index + 1} did not expect this call; "
                f"last user message: {call.last_user_text[:80]!r}"
            )
        if isinstance(step.reply, BaseException):
            raise step.reply
        return _to_response(step.reply, self._name, step.usage)

    def assert_done(self) -> None:
        """Raise ``UnexpectedModelBehavior`` if some scripted steps were never used."""
        if self.remaining > 0:
            raise UnexpectedModelBehavior(
                f"ScriptedModel: {self.remaining} of {len(self._steps)} steps were never used"
            )

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.assert_done()


ReplyFunction = Callable[[ModelCall], "Reply | Awaitable[Reply]"]


class FunctionModel(Model):
    """Answers each call with ``function(call)``; the function may be sync or async."""

    def __init__(self, function: ReplyFunction, *, name: str = "function") -> None:
        self._function = function
        self._name = name
        self.calls: list[ModelCall] = []

    @property
    def name(self) -> str:
        return self._name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        call = ModelCall(tuple(messages), tuple(tools), output_schema, settings)
        self.calls.append(call)
        reply = self._function(call)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, BaseException):
            raise reply
        return _to_response(reply, self._name, Usage())
