"""``RetryModel``: retries a model call on retryable failures, with backoff and full jitter.

Only ``ModelUnavailableError`` is retried (429, 5xx, timeouts, dropped connections, malformed
or cut-off replies); a request the provider rejected fails at once. The wait before attempt n+1
is uniform in ``[0, min(max_delay, base_delay * 2**n)]`` ("full jitter"), and never shorter than
a Retry-After the server sent. When the server asks for a longer wait than ``max_delay``, or the
overall deadline (``keel.llm.timeout.deadline``) would pass, the error is raised at once so a
fallback model can answer instead.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from opentelemetry import trace

from keel.errors import ModelUnavailableError
from keel.llm.base import Model
from keel.llm.messages import Message, ModelSettings, Response, StreamEvent, ToolDefinition
from keel.llm.timeout import remaining_time
from keel.llm.wrapper import WrapperModel
from keel.observe import semconv as sc

__all__ = ["RetryModel"]


class RetryModel(WrapperModel):
    """Calls ``wrapped`` up to ``max_attempts`` times while it fails with a retryable error.

    A stream is retried only until its first event: once text has reached the caller it cannot
    be taken back, so a later failure is raised as it is.
    """

    def __init__(
        self,
        wrapped: Model,
        *,
        max_attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 20.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1 or base_delay < 0 or max_delay < 0:
            raise ValueError("max_attempts must be >= 1 and the delays >= 0")
        super().__init__(wrapped)
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()

    def delay(self, attempt: int, error: ModelUnavailableError) -> float | None:
        """Seconds to wait after failed ``attempt`` (1-based), or None to give up now."""
        if attempt >= self.max_attempts:
            return None
        wait = self._rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if error.retry_after is not None:
            if error.retry_after > self.max_delay:
                return None
            wait = max(wait, error.retry_after)
        left = remaining_time()
        if left is not None and wait >= left:
            return None
        return wait

    async def _wait(self, attempt: int, error: ModelUnavailableError) -> bool:
        wait = self.delay(attempt, error)
        if wait is None:
            return False
        trace.get_current_span().add_event(
            "keel.retry",
            {
                sc.KEEL_RETRY_ATTEMPT: attempt,
                sc.KEEL_RETRY_DELAY: round(wait, 3),
                sc.ERROR_TYPE: type(error).__name__,
            },
        )
        await self._sleep(wait)
        return True

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.wrapped.request(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                )
            except ModelUnavailableError as e:
                if not await self._wait(attempt, e):
                    raise

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        attempt = 0
        while True:
            attempt += 1
            started = False
            try:
                async for event in self.wrapped.stream(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                ):
                    started = True
                    yield event
                return
            except ModelUnavailableError as e:
                if started or not await self._wait(attempt, e):
                    raise
