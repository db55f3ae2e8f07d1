"""``CachedModel``: an exact and an optional semantic response cache around any ``Model``.

A call is looked up by its exact key first; with an embedder, a call that ends with a user message
is then looked up by the embedding of that message among calls that match in everything else
(model, settings, tools, system prompt, history: the key's scope), and a stored response whose
message is at least ``threshold`` similar answers it. Calls that sample (temperature > 0, or a
temperature the wrapper cannot know) are not cached unless ``cache_sampled``; responses that call
a tool with effects are never stored nor served. A hit reports zero usage: nothing was spent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, TracerProvider

from keel.cache.base import CacheBackend, CacheEntry, SemanticItem
from keel.cache.keys import CacheKey, cache_key
from keel.errors import KeelError, ToolNotFoundError
from keel.llm.base import Model
from keel.llm.cost import PriceTable
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
    Usage,
)
from keel.llm.wrapper import WrapperModel
from keel.observe import semconv as sc

if TYPE_CHECKING:
    from keel.memory.base import Embedder
    from keel.tools.registry import ToolRegistry

__all__ = ["DEFAULT_THRESHOLD", "CacheCounters", "CachedModel"]

logger = logging.getLogger("keel.cache")
_tracer = trace.get_tracer("keel.cache")

DEFAULT_THRESHOLD = 0.998
"""Similarity threshold for all-MiniLM-L6-v2 from ``keel cache calibrate`` on the shipped set at
the default 1% wrong-hit target. It is that high because MiniLM scores word-order swaps
("London to New York" / "New York to London") at 0.998: at this threshold a semantic hit is
little more than a case, spacing or punctuation variant. Recalibrate for another embedder."""


@dataclass
class CacheCounters:
    """What a ``CachedModel`` did since it was built (this process only)."""

    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    skipped: int = 0
    stored: int = 0
    errors: int = 0
    saved_usd: float = 0.0

    @property
    def hits(self) -> int:
        return self.exact_hits + self.semantic_hits


@dataclass(frozen=True)
class _Lookup:
    key: CacheKey
    scope: str | None = None
    vector: list[float] | None = None


class CachedModel(WrapperModel):
    """Answers repeated (and, with ``embedder``, similar) calls from ``backend``.

    ``namespace`` separates tenants or agents (``keel cache clear --namespace``). ``ttl`` is in
    seconds (None: entries never expire). ``default_temperature`` is the temperature the wrapped
    model uses when a call sets none; None means unknown, and such calls count as sampled. Tool
    calls in a response make it uncacheable unless every called tool is in ``read_only_tools`` or
    is declared read-only in ``registry``. ``prices`` turns hits into ``saved_usd``. With
    ``owns_backend``, ``aclose()`` closes the backend too.
    """

    def __init__(
        self,
        model: Model,
        backend: CacheBackend,
        *,
        namespace: str = "default",
        embedder: Embedder | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        ttl: float | None = 7 * 24 * 3600.0,
        cache_sampled: bool = False,
        default_temperature: float | None = None,
        read_only_tools: Iterable[str] = (),
        registry: ToolRegistry | None = None,
        prices: PriceTable | None = None,
        tracer_provider: TracerProvider | None = None,
        owns_backend: bool = False,
    ) -> None:
        super().__init__(model)
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive seconds, or None")
        if not namespace:
            raise ValueError("namespace must not be empty")
        self.backend = backend
        self.namespace = namespace
        self.embedder = embedder
        self.threshold = threshold
        self.ttl = ttl
        self.cache_sampled = cache_sampled
        self.default_temperature = default_temperature
        self.read_only_tools = frozenset(read_only_tools)
        self.registry = registry
        self.prices = prices
        self.counters = CacheCounters()
        self.owns_backend = owns_backend
        self._tracer = (
            _tracer if tracer_provider is None else tracer_provider.get_tracer("keel.cache")
        )

    # -- policy ----------------------------------------------------------------------------

    def samples(self, settings: ModelSettings | None) -> bool:
        """True when a call with ``settings`` may answer differently each time."""
        temperature = None if settings is None else settings.temperature
        if temperature is None:
            temperature = self.default_temperature
        return temperature is None or temperature > 0

    def is_effectful(self, response: Response) -> bool:
        """True when ``response`` calls a tool not known to be read-only."""
        return any(not self._read_only(call.name) for call in response.message.tool_calls)

    def _read_only(self, name: str) -> bool:
        if name in self.read_only_tools:
            return True
        if self.registry is None:
            return False
        try:
            return not self.registry.get(name).has_side_effects
        except ToolNotFoundError:
            return False

    # -- lookup and store ------------------------------------------------------------------

    def _key(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolDefinition],
        output_schema: dict[str, Any] | None,
        settings: ModelSettings | None,
    ) -> CacheKey:
        return cache_key(
            self.wrapped.name,
            messages,
            tools=tools,
            output_schema=output_schema,
            settings=settings,
        )

    async def _lookup(self, key: CacheKey, span: Span) -> tuple[Response | None, _Lookup]:
        """A stored response for ``key`` (exact, then semantic), recorded on ``span``."""
        lookup = _Lookup(key)
        try:
            entry = await self.backend.get(self.namespace, key.exact)
            kind, similarity = "exact", 1.0
            if entry is None and self.embedder is not None and key.scope is not None:
                assert key.text is not None
                scope = hashlib.sha256(f"{key.scope}\0{self.embedder.name}".encode()).hexdigest()
                (vector,) = await self.embedder.embed([key.text])
                lookup = _Lookup(key, scope, vector)
                match = await self.backend.nearest(self.namespace, scope, vector, self.threshold)
                if match is not None:
                    entry, kind, similarity = match.entry, "semantic", match.similarity
        except (KeelError, OSError) as e:
            self._failed(span, "lookup", e)
            return None, lookup
        if entry is not None and self.is_effectful(entry.response):
            entry = None  # a tool's declared effects changed since it was stored
        span.set_attribute(sc.KEEL_CACHE_HIT, entry is not None)
        if entry is None:
            self.counters.misses += 1
            return None, lookup
        span.set_attribute(sc.KEEL_CACHE_KIND, kind)
        span.set_attribute(sc.KEEL_CACHE_SIMILARITY, similarity)
        if kind == "exact":
            self.counters.exact_hits += 1
        else:
            self.counters.semantic_hits += 1
        saved = self._cost(entry.response)
        if saved is not None:
            self.counters.saved_usd += saved
            span.set_attribute(sc.KEEL_CACHE_SAVED_USD, saved)
        return entry.response.model_copy(update={"usage": Usage()}), lookup

    def _cost(self, response: Response) -> float | None:
        if self.prices is None:
            return None
        cost = self.prices.cost(response.model_name, response.usage)
        if cost is None and response.model_name != self.name:
            cost = self.prices.cost(self.name, response.usage)
        return cost

    async def _store(self, lookup: _Lookup, response: Response, span: Span) -> None:
        stored = not self.is_effectful(response)
        if stored:
            now = time.time()
            entry = CacheEntry(
                key=lookup.key.exact,
                response=response,
                text=lookup.key.text,
                created_at=now,
                expires_at=None if self.ttl is None else now + self.ttl,
            )
            semantic = None
            if lookup.scope is not None and lookup.vector is not None:
                semantic = SemanticItem(scope=lookup.scope, vector=lookup.vector)
            try:
                await self.backend.put(self.namespace, entry, semantic)
                self.counters.stored += 1
            except (KeelError, OSError) as e:
                self._failed(span, "store", e)
                stored = False
        span.set_attribute(sc.KEEL_CACHE_STORED, stored)

    def _failed(self, span: Span, what: str, error: BaseException) -> None:
        # A cache must never break a call: the model answers instead.
        self.counters.errors += 1
        span.set_attribute(sc.ERROR_TYPE, type(error).__name__)
        logger.warning("response cache %s failed, calling the model: %s", what, error)

    def _start(self, settings: ModelSettings | None) -> tuple[Span, bool]:
        span = self._tracer.start_span(f"cache {self.name}")
        span.set_attribute(sc.KEEL_CACHE_NAMESPACE, self.namespace)
        sampled = self.samples(settings) and not self.cache_sampled
        if sampled:
            self.counters.skipped += 1
            span.set_attribute(sc.KEEL_CACHE_SKIPPED, "sampled")
        return span, not sampled

    # -- the Model protocol ----------------------------------------------------------------

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        span, cacheable = self._start(settings)
        try:
            with trace.use_span(span, end_on_exit=False):
                if not cacheable:
                    return await self.wrapped.request(
                        messages, tools=tools, output_schema=output_schema, settings=settings
                    )
                key = self._key(messages, tools, output_schema, settings)
                hit, lookup = await self._lookup(key, span)
                if hit is not None:
                    return hit
                response = await self.wrapped.request(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                )
                await self._store(lookup, response, span)
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
        # As in InstrumentedModel, the span is not made current across ``yield``.
        span, cacheable = self._start(settings)
        try:
            lookup = None
            if cacheable:
                key = self._key(messages, tools, output_schema, settings)
                hit, lookup = await self._lookup(key, span)
                if hit is not None:
                    for event in replay(hit):
                        yield event
                    return
            async for event in self.wrapped.stream(
                messages, tools=tools, output_schema=output_schema, settings=settings
            ):
                if isinstance(event, ResponseDone) and lookup is not None:
                    await self._store(lookup, event.response, span)  # before the last yield
                yield event
        finally:
            span.end()

    async def aclose(self) -> None:
        await self.wrapped.aclose()
        if self.owns_backend:
            await self.backend.close()


def replay(response: Response) -> list[StreamEvent]:
    """A stored response as the stream events a model would have sent."""
    events: list[StreamEvent] = []
    index = 0
    for part in response.message.parts:
        if isinstance(part, TextPart):
            events.append(TextDelta(text=part.text))
        else:
            events.append(
                ToolCallDelta(
                    index=index,
                    id=part.id,
                    name=part.name,
                    arguments_delta=json.dumps(part.arguments),
                )
            )
            index += 1
    events.append(ResponseDone(response=response))
    return events
