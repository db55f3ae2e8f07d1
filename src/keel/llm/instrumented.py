"""``InstrumentedModel``: wraps any ``Model`` in OpenTelemetry GenAI ``chat`` spans.

Spans go through the OpenTelemetry API only, so this costs nothing until a tracer provider is
configured (``keel.observe.setup_tracing``). Message contents are recorded only when content
capture is on (``trace.capture_content``), as ``gen_ai.input.messages`` and
``gen_ai.output.messages`` after redaction (``keel.observe.content``): prompts may hold user data,
and traces are kept. With a ``PriceTable`` the span also carries the call's cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode, TracerProvider

from keel.llm.base import Model
from keel.llm.cost import PriceTable
from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    ResponseDone,
    StreamEvent,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
)
from keel.llm.wrapper import WrapperModel
from keel.observe import semconv as sc
from keel.observe.content import capture_enabled, captured

__all__ = ["InstrumentedModel"]

_tracer = trace.get_tracer("keel.llm")


class InstrumentedModel(WrapperModel):
    """Records one ``chat {model}`` span per call, with settings, usage, cost and finish reason.

    ``tracer_provider`` defaults to the global one; ``prices`` adds ``keel.cost.usd``.
    """

    def __init__(
        self,
        model: Model,
        *,
        provider: str = "keel",
        prices: PriceTable | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        super().__init__(model)
        self.provider = provider
        self.prices = prices
        self._tracer = (
            _tracer if tracer_provider is None else tracer_provider.get_tracer("keel.llm")
        )

    def _start(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        settings: ModelSettings | None,
    ) -> Span:
        span = self._tracer.start_span(f"chat {self.name}")
        span.set_attribute(sc.GEN_AI_OPERATION_NAME, "chat")
        span.set_attribute(sc.GEN_AI_PROVIDER_NAME, self.provider)
        span.set_attribute(sc.GEN_AI_REQUEST_MODEL, self.name)
        if settings is not None and settings.max_tokens is not None:
            span.set_attribute(sc.GEN_AI_REQUEST_MAX_TOKENS, settings.max_tokens)
        if settings is not None and settings.temperature is not None:
            span.set_attribute(sc.GEN_AI_REQUEST_TEMPERATURE, settings.temperature)
        if tools:
            span.set_attribute(sc.KEEL_REQUEST_TOOLS, [t.name for t in tools])
        if capture_enabled() and span.is_recording():
            content = captured([_message_content(m) for m in messages])
            if content is not None:
                span.set_attribute(sc.GEN_AI_INPUT_MESSAGES, content)
        return span

    def _finish(self, span: Span, response: Response) -> None:
        span.set_attribute(sc.GEN_AI_RESPONSE_MODEL, response.model_name)
        span.set_attribute(sc.GEN_AI_RESPONSE_FINISH_REASONS, [response.finish_reason])
        span.set_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS, response.usage.input_tokens)
        span.set_attribute(sc.GEN_AI_USAGE_OUTPUT_TOKENS, response.usage.output_tokens)
        if capture_enabled() and span.is_recording():
            reply = _message_content(response.message)
            content = captured([{**reply, "finish_reason": response.finish_reason}])
            if content is not None:
                span.set_attribute(sc.GEN_AI_OUTPUT_MESSAGES, content)
        if self.prices is not None:
            cost = self.prices.cost(response.model_name, response.usage)
            if cost is None and response.model_name != self.name:
                cost = self.prices.cost(self.name, response.usage)
            if cost is not None:
                span.set_attribute(sc.KEEL_COST_USD, cost)

    @staticmethod
    def _fail(span: Span, error: BaseException) -> None:
        span.set_attribute(sc.ERROR_TYPE, type(error).__name__)
        span.set_status(StatusCode.ERROR, str(error)[:200])

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        span = self._start(messages, tools, settings)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                response = await self.wrapped.request(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                )
        except BaseException as e:
            self._fail(span, e)
            raise
        else:
            self._finish(span, response)
            return response
        finally:
            span.end()

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        # The span is not made current: a context attached across ``yield`` would leak into the
        # consumer's code between events.
        span = self._start(messages, tools, settings)
        try:
            async for event in self.wrapped.stream(
                messages, tools=tools, output_schema=output_schema, settings=settings
            ):
                if isinstance(event, ResponseDone):
                    self._finish(span, event.response)
                yield event
        except BaseException as e:
            self._fail(span, e)
            raise
        finally:
            span.end()


def _message_content(message: Message) -> dict[str, Any]:
    """A message in the GenAI conventions' shape: ``{role, parts: [{type, ...}]}``."""
    if isinstance(message, AssistantMessage):
        parts: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ToolCallPart):
                parts.append(
                    {
                        "type": "tool_call",
                        "id": part.id,
                        "name": part.name,
                        "arguments": part.arguments,
                    }
                )
            else:
                parts.append({"type": "text", "content": part.text})
        return {"role": "assistant", "parts": parts}
    if isinstance(message, ToolMessage):
        return {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": message.tool_call_id,
                    "response": message.content,
                }
            ],
        }
    return {"role": message.role, "parts": [{"type": "text", "content": message.content}]}
