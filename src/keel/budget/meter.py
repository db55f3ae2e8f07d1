"""``BudgetMeter`` (the budgets of one piece of work) and ``BudgetedModel`` (a model under them).

``async with meter:`` makes the meter current for the block, in this task and the tasks it
starts: every ``BudgetedModel`` call and every tool call (through ``keel.tools``' gate) inside
is reserved against all the meter's budgets before it happens and settled after, and the block's
wall time is checked before each call and added to the budgets when the block ends.

The worst case of a model call is its prompt, counted by the model's own counter (exact for
local models, a documented over-estimate for hosted ones), plus ``max_tokens``, which the
wrapper always sets so the answer cannot be longer than what was reserved; its cost is that at
the model's ``PriceTable`` price. So a runaway loop stops *before* the call that would overshoot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode

from keel.budget.base import Budget, BudgetLedger, Reservation, Spend, budget_exceeded
from keel.errors import BudgetExceeded, StoreError
from keel.llm.base import Model
from keel.llm.cost import PriceTable
from keel.llm.messages import (
    Message,
    ModelSettings,
    Response,
    ResponseDone,
    StreamEvent,
    ToolCallPart,
    ToolDefinition,
    Usage,
)
from keel.llm.wrapper import WrapperModel
from keel.observe import semconv as sc
from keel.tools.base import Tool, ToolResult
from keel.tools.executor import tool_gate

if TYPE_CHECKING:
    from keel.budget.alerts import SpendAlerts

__all__ = ["BudgetMeter", "BudgetedModel", "current_meter"]

log = logging.getLogger("keel.budget")
_tracer = trace.get_tracer("keel.budget")
_current: ContextVar[BudgetMeter | None] = ContextVar("keel_budget_meter", default=None)


def current_meter() -> BudgetMeter | None:
    """The meter of the innermost ``async with meter:`` block, if any."""
    return _current.get()


def _pairs(spend: Spend) -> list[str]:
    return [f"{k}={v:g}" for k, v in spend.nonzero().items()]


class BudgetMeter:
    """Budgets that apply together to one piece of work (e.g. run + tenant-day), over a ledger.

    ``prices`` prices model calls (a model it does not price costs nothing); ``ttl`` is how long
    an unsettled reservation holds budget (a crashed process gives it back after that);
    ``alerts`` watches the spend rate of the meter's tenants and agents.
    """

    def __init__(
        self,
        ledger: BudgetLedger,
        budgets: Sequence[Budget],
        *,
        prices: PriceTable | None = None,
        ttl: float = 300.0,
        alerts: SpendAlerts | None = None,
    ) -> None:
        if not budgets:
            raise ValueError("a BudgetMeter needs at least one Budget")
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ledger = ledger
        self.budgets = tuple(budgets)
        self.prices = prices
        self.ttl = ttl
        self.alerts = alerts
        self._started: float | None = None
        self._wall_base: dict[str, float] = {}
        self._tokens: list[tuple[Token[BudgetMeter | None], Any]] = []

    # -- the block -------------------------------------------------------------------------

    async def __aenter__(self) -> BudgetMeter:
        timed = [b for b in self.budgets if b.limits.wall_time_s is not None]
        if timed:
            keys = [b.scope.key() for b in timed]
            self._wall_base = {s.key: s.used.wall_time_s for s in await self.ledger.spend(keys)}
        self._started = time.monotonic()
        try:
            self.check_time()  # a run whose wall time is already spent does not start
        except BudgetExceeded:
            self._started = None
            raise
        self._tokens.append((_current.set(self), tool_gate.set(self._gate)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        meter_token, gate_token = self._tokens.pop()
        tool_gate.reset(gate_token)
        _current.reset(meter_token)
        if self._started is not None:
            elapsed = time.monotonic() - self._started
            self._started = None
            try:
                await self.record(Spend(wall_time_s=elapsed))
            except StoreError as e:
                if exc is None:
                    raise
                log.warning("could not record the wall time of a failed block: %s", e.message)

    def elapsed(self) -> float:
        return 0.0 if self._started is None else time.monotonic() - self._started

    def time_left(self) -> float | None:
        """Seconds before the tightest wall-time limit runs out (None: no such limit)."""
        left: float | None = None
        for budget in self.budgets:
            bound = budget.limits.wall_time_s
            if bound is None:
                continue
            key = budget.scope.key()
            rest = bound - self._wall_base.get(key, 0.0) - self.elapsed()
            left = rest if left is None else min(left, rest)
        return left

    def check_time(self) -> None:
        """Raise ``BudgetExceeded`` if a wall-time limit has run out (checked before each call)."""
        for budget in self.budgets:
            bound = budget.limits.wall_time_s
            if bound is None:
                continue
            key = budget.scope.key()
            used = self._wall_base.get(key, 0.0) + self.elapsed()
            if used >= bound:
                raise budget_exceeded(key, "wall_time_s", used, bound, 0.0)

    # -- reserve and settle ----------------------------------------------------------------

    async def reserve(self, amount: Spend, span: Span | None = None) -> Reservation:
        """Check the wall time, then hold ``amount`` on every budget (or raise, holding none)."""
        span = span if span is not None else trace.get_current_span()
        recording = span.is_recording()
        if recording:
            span.set_attribute(sc.KEEL_BUDGET_SCOPE, [b.scope.key() for b in self.budgets])
            span.set_attribute(sc.KEEL_BUDGET_RESERVED, _pairs(amount))
        try:
            self.check_time()
            reservation = await self.ledger.reserve(self.budgets, amount, ttl=self.ttl)
        except BudgetExceeded as e:
            if recording:
                span.set_attribute(sc.KEEL_BUDGET_EXCEEDED, True)
                span.set_attribute(sc.KEEL_BUDGET_EXCEEDED_SCOPE, e.scope)
                span.set_attribute(sc.KEEL_BUDGET_LIMIT, e.limit)
            log.warning("%s", e.message)
            raise
        if recording:
            span.set_attribute(sc.KEEL_BUDGET_EXCEEDED, False)
            span.set_attribute(
                sc.KEEL_BUDGET_REMAINING,
                [
                    f"{key} {c}={v:g}"
                    for key, left in reservation.remaining.items()
                    for c, v in left.items()
                ],
            )
        return reservation

    async def settle(
        self, reservation: Reservation, actual: Spend, span: Span | None = None
    ) -> None:
        """Replace ``reservation`` by what was actually used."""
        if any(
            a > r + 1e-9 for a, r in zip(actual.values(), reservation.amount.values(), strict=True)
        ):
            log.warning(
                "a call used more than was reserved for it (%s > %s): its counter under-counts",
                actual.nonzero(),
                reservation.amount.nonzero(),
            )
        span = span if span is not None else trace.get_current_span()
        if span.is_recording():
            span.set_attribute(sc.KEEL_BUDGET_SETTLED, _pairs(actual))
        await self.ledger.settle(reservation, actual)
        if self.alerts is not None:
            self.alerts.record([b.scope for b in self.budgets], actual)

    async def record(self, actual: Spend) -> None:
        """Add ``actual`` to every budget without a reservation (e.g. the block's wall time)."""
        keys = tuple(b.scope.key() for b in self.budgets)
        await self.ledger.settle(Reservation(Reservation.new_id(), keys, Spend(), 0.0, {}), actual)

    def model_cost(self, model_name: str, usage: Usage) -> float:
        if self.prices is None:
            return 0.0
        return self.prices.cost(model_name, usage) or 0.0

    async def _gate(
        self, tool: Tool, call: ToolCallPart
    ) -> Callable[[ToolResult], Awaitable[None]]:
        one = Spend(tool_calls=1)
        span = trace.get_current_span()
        reservation = await self.reserve(one, span)

        async def done(result: ToolResult) -> None:
            await self.settle(reservation, one, span)

        return done


class BudgetedModel(WrapperModel):
    """Reserves each call's worst case on the current meter (or ``meter``), settles the actual.

    ``max_tokens`` is what a call may generate when its settings name no limit (it is then set,
    so the reservation is a true bound); without a meter the model is called unchanged.
    """

    def __init__(
        self, wrapped: Model, meter: BudgetMeter | None = None, *, max_tokens: int = 1024
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        super().__init__(wrapped)
        self.meter = meter
        self.max_tokens = max_tokens

    async def _plan(
        self,
        meter: BudgetMeter,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings | None,
    ) -> tuple[ModelSettings, Spend]:
        prompt = await self.wrapped.count_tokens(messages, tools=tools)
        answer = settings.max_tokens if settings is not None and settings.max_tokens else None
        if answer is None:
            answer = self.max_tokens
            window = self.context_window
            if window is not None and window - prompt >= 1:
                answer = min(answer, window - prompt)
            settings = (settings or ModelSettings()).model_copy(update={"max_tokens": answer})
        assert settings is not None
        worst = Usage(input_tokens=prompt, output_tokens=answer)
        amount = Spend(
            input_tokens=prompt,
            output_tokens=answer,
            total_tokens=prompt + answer,
            cost_usd=meter.model_cost(self.name, worst),
            model_calls=1,
        )
        return settings, amount

    def _actual(self, meter: BudgetMeter, response: Response) -> Spend:
        u = response.usage
        cost = meter.model_cost(response.model_name, u) or meter.model_cost(self.name, u)
        return Spend(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            total_tokens=u.total_tokens,
            cost_usd=cost,
            model_calls=1,
        )

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        meter = self.meter or current_meter()
        if meter is None:
            return await self.wrapped.request(
                messages, tools=tools, output_schema=output_schema, settings=settings
            )
        with _tracer.start_as_current_span(f"budget {self.name}") as span:
            settings, amount = await self._plan(meter, messages, tools, settings)
            reservation = await meter.reserve(amount, span)
            actual = Spend(model_calls=1)
            try:
                call = self.wrapped.request(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                )
                response = await _within(meter, call)
                actual = self._actual(meter, response)
                return response
            except BaseException as e:
                span.set_status(StatusCode.ERROR, type(e).__name__)
                raise
            finally:
                await meter.settle(reservation, actual, span)

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        meter = self.meter or current_meter()
        if meter is None:
            async for event in self.wrapped.stream(
                messages, tools=tools, output_schema=output_schema, settings=settings
            ):
                yield event
            return
        # As in InstrumentedModel, the span is not made current across ``yield``.
        span = _tracer.start_span(f"budget {self.name}")
        try:
            settings, amount = await self._plan(meter, messages, tools, settings)
            reservation = await meter.reserve(amount, span)
            actual = Spend(model_calls=1)
            try:
                async for event in self.wrapped.stream(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                ):
                    if isinstance(event, ResponseDone):
                        actual = self._actual(meter, event.response)
                    yield event
            finally:
                await meter.settle(reservation, actual, span)
        finally:
            span.end()


async def _within(meter: BudgetMeter, call: Awaitable[Response]) -> Response:
    """Await ``call``, cut when the tightest wall-time limit runs out."""
    left = meter.time_left()
    if left is None:
        return await call
    try:
        async with asyncio.timeout(max(left, 0.0)):
            return await call
    except TimeoutError:
        for budget in meter.budgets:
            bound = budget.limits.wall_time_s
            if bound is not None:
                key = budget.scope.key()
                used = meter._wall_base.get(key, 0.0) + meter.elapsed()
                if used >= bound - 1e-3:
                    raise budget_exceeded(key, "wall_time_s", used, bound, 0.0) from None
        raise
