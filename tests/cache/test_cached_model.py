"""``CachedModel`` over a real SQLite backend: hits, misses, what is never cached, streaming,
spans and cost saved. Models are test doubles: the cache's decisions must be deterministic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keel.cache import CachedModel, SQLiteCacheBackend
from keel.llm import (
    AssistantMessage,
    ModelSettings,
    Price,
    PriceTable,
    Response,
    ResponseDone,
    SystemMessage,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolDefinition,
    Usage,
    UserMessage,
)
from keel.llm.testing import FunctionModel, ModelCall
from keel.memory.testing import HashingEmbedder
from keel.tools import ToolRegistry

GREEDY = ModelSettings(temperature=0.0)
SYSTEM = SystemMessage(content="Answer briefly.")


def ask(text: str) -> list[SystemMessage | UserMessage]:
    return [SYSTEM, UserMessage(content=text)]


def answering(call: ModelCall) -> Response:
    """A model that echoes the question, so a wrong hit shows in the answer."""
    return Response(
        message=AssistantMessage(parts=(TextPart(text=f"answer to: {call.last_user_text}"),)),
        usage=Usage(input_tokens=1000, output_tokens=200, requests=1),
        model_name="gpt-4o-mini",
    )


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SQLiteCacheBackend]:
    made = SQLiteCacheBackend(tmp_path / "cache.db")
    yield made
    await made.close()


async def test_a_repeated_call_is_answered_from_the_cache(backend: SQLiteCacheBackend) -> None:
    inner = FunctionModel(answering)
    model = CachedModel(inner, backend)
    first = await model.request(ask("What is the capital of France?"), settings=GREEDY)
    second = await model.request(ask("What is the capital of France?"), settings=GREEDY)
    assert len(inner.calls) == 1
    assert second.message == first.message
    assert first.usage.input_tokens == 1000 and second.usage == Usage()  # a hit costs nothing
    other = await model.request(ask("What is the capital of Spain?"), settings=GREEDY)
    assert other.message.text == "answer to: What is the capital of Spain?"
    assert len(inner.calls) == 2
    assert (model.counters.exact_hits, model.counters.misses) == (1, 2)


async def test_sampled_calls_are_not_cached_unless_asked(backend: SQLiteCacheBackend) -> None:
    inner = FunctionModel(answering)
    model = CachedModel(inner, backend)
    warm = ModelSettings(temperature=0.7)
    for _ in range(2):
        await model.request(ask("Tell me a joke."), settings=warm)
        await model.request(ask("Tell me a joke."))  # temperature unknown: counts as sampled
    assert len(inner.calls) == 4 and model.counters.skipped == 4
    assert (await backend.stats()).entries == 0
    known = CachedModel(inner, backend, default_temperature=0.0)
    await known.request(ask("Tell me a joke."))
    await known.request(ask("Tell me a joke."))
    assert len(inner.calls) == 5
    opted_in = CachedModel(inner, backend, cache_sampled=True)
    await opted_in.request(ask("Tell me a joke."), settings=warm)
    await opted_in.request(ask("Tell me a joke."), settings=warm)
    assert len(inner.calls) == 6


async def test_responses_calling_effectful_tools_are_never_stored(
    backend: SQLiteCacheBackend,
) -> None:
    registry = ToolRegistry()

    @registry.tool(effects="read_only")
    def lookup(city: str) -> str:
        """Looks a city up."""
        return city

    @registry.tool(effects="sends_outside")
    def send_email(to: str, body: str) -> str:
        """Sends an email."""
        return "sent"

    def calls_tool(call: ModelCall) -> ToolCallPart:
        name = "send_email" if "email" in call.last_user_text.lower() else "lookup"
        return ToolCallPart(id="c1", name=name, arguments={})

    tools = [ToolDefinition(name="lookup"), ToolDefinition(name="send_email")]
    inner = FunctionModel(calls_tool)
    model = CachedModel(inner, backend, registry=registry)
    for _ in range(2):
        await model.request(ask("Email Bob the report."), tools=tools, settings=GREEDY)
        await model.request(ask("Look up Paris."), tools=tools, settings=GREEDY)
    assert [c.last_user_text for c in inner.calls] == [
        "Email Bob the report.",
        "Look up Paris.",
        "Email Bob the report.",
    ]
    # Without a registry or an allow-list, any tool call counts as effectful.
    bare = CachedModel(inner, backend, namespace="bare")
    await bare.request(ask("Look up Paris."), tools=tools, settings=GREEDY)
    await bare.request(ask("Look up Paris."), tools=tools, settings=GREEDY)
    assert len(inner.calls) == 5
    listed = CachedModel(inner, backend, namespace="listed", read_only_tools=["lookup"])
    await listed.request(ask("Look up Paris."), tools=tools, settings=GREEDY)
    await listed.request(ask("Look up Paris."), tools=tools, settings=GREEDY)
    assert len(inner.calls) == 6


async def test_semantic_hits_stay_in_their_scope(backend: SQLiteCacheBackend) -> None:
    inner = FunctionModel(answering)
    embedder = HashingEmbedder(dimension=256)
    model = CachedModel(inner, backend, embedder=embedder, threshold=0.95)
    await model.request(ask("What is the capital of France?"), settings=GREEDY)
    # Same words, other case and punctuation: the bag-of-words vectors are identical.
    same = await model.request(ask("what is the CAPITAL of france"), settings=GREEDY)
    assert same.message.text == "answer to: What is the capital of France?"
    assert model.counters.semantic_hits == 1 and len(inner.calls) == 1
    different = await model.request(ask("What is the population of France?"), settings=GREEDY)
    assert different.message.text == "answer to: What is the population of France?"
    # Another system prompt, model settings or tool set is another scope: no hit.
    await model.request(
        [
            SystemMessage(content="Answer at length."),
            UserMessage(content="what is the capital of france"),
        ],
        settings=GREEDY,
    )
    await model.request(
        ask("what is the capital of france"), settings=ModelSettings(temperature=0, max_tokens=5)
    )
    await model.request(
        ask("what is the capital of france"), settings=GREEDY, tools=[ToolDefinition(name="t")]
    )
    assert len(inner.calls) == 5 and model.counters.semantic_hits == 1
    other_model = CachedModel(FunctionModel(answering, name="other"), backend, embedder=embedder)
    await other_model.request(ask("what is the capital of france"), settings=GREEDY)
    assert other_model.counters.semantic_hits == 0


async def test_ttl_expiry_and_namespace_invalidation(backend: SQLiteCacheBackend) -> None:
    inner = FunctionModel(answering)
    await backend.nearest("warm", "up", [1.0, 0.0], 0.5)  # imports numpy and usearch
    short = CachedModel(inner, backend, namespace="tenant-a/agent", ttl=0.3)
    await short.request(ask("Hi"), settings=GREEDY)
    await short.request(ask("Hi"), settings=GREEDY)
    assert len(inner.calls) == 1
    await asyncio.sleep(0.4)
    await short.request(ask("Hi"), settings=GREEDY)
    assert len(inner.calls) == 2
    other = CachedModel(inner, backend, namespace="tenant-b")
    await other.request(ask("Hi"), settings=GREEDY)
    assert len(inner.calls) == 3  # namespaces do not share entries
    assert await backend.clear("tenant-a") == 1
    await short.request(ask("Hi"), settings=GREEDY)
    await other.request(ask("Hi"), settings=GREEDY)
    assert len(inner.calls) == 4


async def test_streaming_replays_a_hit_and_stores_a_miss(backend: SQLiteCacheBackend) -> None:
    def mixed(call: ModelCall) -> AssistantMessage:
        return AssistantMessage(
            parts=(
                TextPart(text="Looking it up. "),
                ToolCallPart(id="1", name="lookup", arguments={"q": "x"}),
            )
        )

    inner = FunctionModel(mixed)
    model = CachedModel(inner, backend, read_only_tools=["lookup"])
    first = [e async for e in model.stream(ask("Find x"), settings=GREEDY)]
    second = [e async for e in model.stream(ask("Find x"), settings=GREEDY)]
    assert len(inner.calls) == 1
    assert [type(e) for e in second] == [TextDelta, ToolCallDelta, ResponseDone]
    assert second[:2] == first[:2]
    assert isinstance(second[-1], ResponseDone) and isinstance(first[-1], ResponseDone)
    assert second[-1].response.message == first[-1].response.message
    # A request after a streamed miss hits too: the stream stored the final response.
    await model.request(ask("Find x"), settings=GREEDY)
    assert len(inner.calls) == 1


async def test_the_span_says_hit_kind_similarity_and_saved_dollars(
    backend: SQLiteCacheBackend,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prices = PriceTable({"gpt-4o-mini": Price(input=0.15, output=0.60)})
    model = CachedModel(
        FunctionModel(answering, name="gpt-4o-mini"),
        backend,
        embedder=HashingEmbedder(64),
        prices=prices,
        tracer_provider=provider,
    )
    await model.request(ask("Hello there"), settings=GREEDY)
    await model.request(ask("Hello there"), settings=GREEDY)
    await model.request(ask("hello THERE!"), settings=GREEDY)
    await model.request(ask("Hi"), settings=ModelSettings(temperature=1.0))
    spans = [dict(s.attributes or {}) for s in exporter.get_finished_spans()]
    assert [s.get("keel.cache.hit") for s in spans] == [False, True, True, None]
    assert spans[0]["keel.cache.stored"] is True
    assert spans[1]["keel.cache.kind"] == "exact" and spans[1]["keel.cache.similarity"] == 1.0
    assert spans[2]["keel.cache.kind"] == "semantic"
    assert spans[2]["keel.cache.similarity"] == pytest.approx(1.0)
    saved = (1000 * 0.15 + 200 * 0.60) / 1e6
    assert spans[1]["keel.cache.saved_usd"] == pytest.approx(saved)
    assert model.counters.saved_usd == pytest.approx(2 * saved)
    assert spans[3]["keel.cache.skipped"] == "sampled"


async def test_a_broken_backend_never_breaks_the_call(tmp_path: Path) -> None:
    backend = SQLiteCacheBackend(tmp_path / "cache.db")
    await backend.close()
    inner = FunctionModel(answering)
    model = CachedModel(inner, backend)
    response = await model.request(ask("Hi"), settings=GREEDY)
    assert response.message.text == "answer to: Hi" and model.counters.errors == 2
