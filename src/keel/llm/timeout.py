"""``TimeoutModel`` (a time limit per call) and ``deadline`` (one limit over many calls).

``with deadline(30):`` sets a point in time for everything inside it, in this task and the tasks
it starts; ``TimeoutModel`` cuts each call at whichever comes first, its own timeout or the
deadline, and ``RetryModel`` will not start a wait that would cross it. A call cut by its own
timeout raises ``ModelTimeoutError`` (retryable); one cut by the deadline raises
``DeadlineExceededError`` (not retryable: the work as a whole is out of time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from keel.errors import DeadlineExceededError, ModelTimeoutError
from keel.llm.base import Model
from keel.llm.messages import Message, ModelSettings, Response, StreamEvent, ToolDefinition
from keel.llm.wrapper import WrapperModel

__all__ = ["TimeoutModel", "deadline", "remaining_time"]

_deadline: ContextVar[float | None] = ContextVar("keel_llm_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Model calls inside the block must finish within ``seconds`` from now (nested: earliest)."""
    end = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(end if outer is None else min(outer, end))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining_time() -> float | None:
    """Seconds left before the current deadline, or None when there is none."""
    end = _deadline.get()
    return None if end is None else end - time.monotonic()


class TimeoutModel(WrapperModel):
    """Abandons a call that takes longer than ``timeout`` seconds (or crosses the deadline).

    For a stream the limit covers the whole stream, first token to last.
    """

    def __init__(self, wrapped: Model, *, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        super().__init__(wrapped)
        self.timeout = timeout

    def _limit(self) -> tuple[float, bool]:
        """Seconds allowed for the next call, and whether the deadline (not the timeout) sets it."""
        left = remaining_time()
        if left is not None and left <= 0:
            raise DeadlineExceededError(f"the deadline passed before {self.name} was called")
        if left is not None and left < self.timeout:
            return left, True
        return self.timeout, False

    def _error(self, by_deadline: bool) -> Exception:
        if by_deadline:
            return DeadlineExceededError(f"{self.name} did not answer before the deadline")
        return ModelTimeoutError(f"{self.name} did not answer within {self.timeout:g} s")

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        limit, by_deadline = self._limit()
        try:
            return await asyncio.wait_for(
                self.wrapped.request(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                ),
                limit,
            )
        except TimeoutError as e:
            raise self._error(by_deadline) from e

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        limit, by_deadline = self._limit()
        end = time.monotonic() + limit
        events = aiter(
            self.wrapped.stream(
                messages, tools=tools, output_schema=output_schema, settings=settings
            )
        )
        try:
            while True:
                try:
                    event = await asyncio.wait_for(anext(events), end - time.monotonic())
                except StopAsyncIteration:
                    return
                except TimeoutError as e:
                    raise self._error(by_deadline) from e
                yield event
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
