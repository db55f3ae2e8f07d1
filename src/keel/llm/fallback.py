"""``FallbackModel``: tries a chain of models in order, each behind its own circuit breaker.

A model whose breaker is open is skipped without a call. A model that fails with a
``ModelError`` (anything but a structured-output failure, which another model would not fix
by itself) counts a failure on its breaker and the next model is tried; when every model has
failed or been skipped, ``AllModelsFailedError`` lists why. The current span gets one
``keel.fallback`` event per model tried, with its breaker state, and the name of the model that
answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from opentelemetry import trace

from keel.errors import (
    AllModelsFailedError,
    CircuitOpenError,
    DeadlineExceededError,
    ModelError,
    OutputValidationError,
)
from keel.llm.base import Model
from keel.llm.circuit import CircuitBreaker
from keel.llm.messages import Message, ModelSettings, Response, StreamEvent, ToolDefinition
from keel.observe import semconv as sc

__all__ = ["FallbackModel"]


class FallbackModel(Model):
    """The first model of ``models`` that answers; breakers are made per model unless given."""

    def __init__(
        self,
        models: Sequence[Model],
        *,
        breakers: Sequence[CircuitBreaker] | None = None,
        failure_threshold: int = 5,
        window: float = 60.0,
        reset_timeout: float = 30.0,
    ) -> None:
        if not models:
            raise ValueError("FallbackModel needs at least one model")
        if breakers is not None and len(breakers) != len(models):
            raise ValueError("give one circuit breaker per model")
        self.models = list(models)
        self.breakers = (
            list(breakers)
            if breakers is not None
            else [
                CircuitBreaker(
                    m.name,
                    failure_threshold=failure_threshold,
                    window=window,
                    reset_timeout=reset_timeout,
                )
                for m in models
            ]
        )

    @property
    def name(self) -> str:
        return self.models[0].name

    @property
    def context_window(self) -> int | None:
        windows = [w for m in self.models if (w := m.context_window) is not None]
        return min(windows) if windows else None

    def _event(self, model: Model, breaker: CircuitBreaker, outcome: str) -> None:
        trace.get_current_span().add_event(
            "keel.fallback",
            {
                sc.KEEL_FALLBACK_MODEL: model.name,
                sc.KEEL_CIRCUIT_STATE: breaker.state,
                "keel.fallback.outcome": outcome,
            },
        )

    def _skip(self, model: Model, breaker: CircuitBreaker, errors: list[BaseException]) -> bool:
        if breaker.allow():
            return False
        self._event(model, breaker, "skipped")
        errors.append(CircuitOpenError(f"the circuit breaker of {model.name} is open"))
        return True

    def _failed(self, model: Model, breaker: CircuitBreaker, error: ModelError) -> None:
        if isinstance(error, OutputValidationError | DeadlineExceededError):
            breaker.release()
            raise error
        breaker.record_failure()
        self._event(model, breaker, type(error).__name__)

    def _answered(self, model: Model, breaker: CircuitBreaker) -> None:
        breaker.record_success()
        self._event(model, breaker, "ok")
        trace.get_current_span().set_attribute(sc.KEEL_FALLBACK_MODEL, model.name)

    def _exhausted(self, errors: list[BaseException]) -> AllModelsFailedError:
        reasons = "; ".join(f"{m.name}: {e}" for m, e in zip(self.models, errors, strict=False))
        return AllModelsFailedError(f"every model failed ({reasons})", errors=errors)

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        errors: list[BaseException] = []
        for model, breaker in zip(self.models, self.breakers, strict=True):
            if self._skip(model, breaker, errors):
                continue
            try:
                response = await model.request(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                )
            except ModelError as e:
                self._failed(model, breaker, e)
                errors.append(e)
                continue
            except BaseException:
                breaker.release()
                raise
            self._answered(model, breaker)
            return response
        raise self._exhausted(errors)

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Falls back only before the first event: a stream already under way is not replaced."""
        errors: list[BaseException] = []
        for model, breaker in zip(self.models, self.breakers, strict=True):
            if self._skip(model, breaker, errors):
                continue
            started = False
            try:
                async for event in model.stream(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                ):
                    started = True
                    yield event
            except ModelError as e:
                if started:
                    breaker.record_failure()
                    raise
                self._failed(model, breaker, e)
                errors.append(e)
                continue
            except BaseException:
                breaker.release()
                raise
            self._answered(model, breaker)
            return
        raise self._exhausted(errors)

    async def count_text_tokens(self, text: str) -> int:
        return await self.models[0].count_text_tokens(text)

    async def count_tokens(
        self, messages: Sequence[Message], *, tools: Sequence[ToolDefinition] = ()
    ) -> int:
        return await self.models[0].count_tokens(messages, tools=tools)

    async def aclose(self) -> None:
        for model in self.models:
            await model.aclose()
