"""The conformance suite every ``CacheBackend`` passes (run by test_cache_backends.py)."""

from __future__ import annotations

import asyncio
import math
import time

from keel.cache.base import CacheBackend, CacheEntry, SemanticItem
from keel.llm.messages import AssistantMessage, Response, TextPart, Usage


def entry(key: str, text: str = "answer", ttl: float | None = None) -> CacheEntry:
    response = Response(
        message=AssistantMessage(parts=(TextPart(text=text),)),
        usage=Usage(input_tokens=100, output_tokens=20, requests=1),
        model_name="m",
    )
    now = time.time()
    return CacheEntry(
        key=key, response=response, text=text, expires_at=None if ttl is None else now + ttl
    )


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


async def exact_round_trip(backend: CacheBackend) -> None:
    assert await backend.get("ns", "k1") is None
    await backend.put("ns", entry("k1", "one"))
    found = await backend.get("ns", "k1")
    assert found is not None and found.response.message.text == "one"
    assert found.response.usage.input_tokens == 100
    await backend.put("ns", entry("k1", "replaced"))
    again = await backend.get("ns", "k1")
    assert again is not None and again.response.message.text == "replaced"
    assert await backend.get("other", "k1") is None  # namespaces are separate


async def entries_expire(backend: CacheBackend) -> None:
    await backend.nearest("ns", "warm-up", unit(1, 0, 0), 0.9)  # imports numpy and usearch
    await backend.put("ns", entry("short", ttl=0.3), SemanticItem(scope="s", vector=unit(1, 0, 0)))
    await backend.put("ns", entry("long", ttl=60))
    assert await backend.get("ns", "short") is not None
    assert await backend.nearest("ns", "s", unit(1, 0, 0), 0.9) is not None
    await asyncio.sleep(0.5)
    assert await backend.get("ns", "short") is None
    assert await backend.nearest("ns", "s", unit(1, 0, 0), 0.9) is None
    assert await backend.get("ns", "long") is not None
    assert (await backend.stats()).entries == 1


async def semantic_nearest(backend: CacheBackend) -> None:
    await backend.put("ns", entry("a", "about a"), SemanticItem(scope="s1", vector=unit(1, 0, 0)))
    await backend.put("ns", entry("b", "about b"), SemanticItem(scope="s1", vector=unit(0, 1, 0)))
    await backend.put(
        "ns", entry("c", "other scope"), SemanticItem(scope="s2", vector=unit(1, 0, 0))
    )
    match = await backend.nearest("ns", "s1", unit(0.9, 0.1, 0), 0.9)
    assert match is not None and match.entry.key == "a"
    assert 0.9 <= match.similarity <= 1.0
    # Below the threshold: no match, even though "a" is the nearest.
    assert await backend.nearest("ns", "s1", unit(1, 1, 0.2), 0.9) is None
    # Scopes and namespaces never mix.
    scoped = await backend.nearest("ns", "s2", unit(1, 0, 0), 0.9)
    assert scoped is not None and scoped.entry.key == "c"
    assert await backend.nearest("ns", "s3", unit(1, 0, 0), 0.1) is None
    assert await backend.nearest("elsewhere", "s1", unit(1, 0, 0), 0.1) is None


async def many_entries_use_the_graph(backend: CacheBackend) -> None:
    """Above ``exact_below`` (4 in the fixtures) the HNSW path answers, still correctly."""
    items = []
    for i in range(40):
        angle = i * 0.15
        vector = unit(math.cos(angle), math.sin(angle), 0.05 * i)
        items.append((entry(f"k{i}", f"answer {i}"), SemanticItem(scope="s", vector=vector)))
    await backend.put_many("ns", items)
    match = await backend.nearest("ns", "s", unit(math.cos(3.0), math.sin(3.0), 1.0), 0.999)
    assert match is not None and match.entry.key == "k20"


async def clear_by_namespace(backend: CacheBackend) -> None:
    for ns in ("tenant-a", "tenant-a/agent-1", "tenant-ab", "tenant-b"):
        await backend.put(ns, entry("k"), SemanticItem(scope="s", vector=unit(1, 0)))
    assert await backend.nearest("tenant-a", "s", unit(1, 0), 0.5) is not None
    removed = await backend.clear("tenant-a")
    assert removed == 2  # tenant-a and tenant-a/agent-1, not tenant-ab
    assert await backend.get("tenant-a", "k") is None
    assert await backend.get("tenant-a/agent-1", "k") is None
    assert await backend.nearest("tenant-a", "s", unit(1, 0), 0.5) is None
    assert await backend.get("tenant-ab", "k") is not None
    stats = await backend.stats()
    assert [n.namespace for n in stats.namespaces] == ["tenant-ab", "tenant-b"]
    assert stats.semantic_entries == 2
    assert await backend.clear() == 2
    assert (await backend.stats()).entries == 0


async def replaced_entries_are_not_served_twice(backend: CacheBackend) -> None:
    await backend.put("ns", entry("k", "first"), SemanticItem(scope="s", vector=unit(1, 0)))
    await backend.put("ns", entry("k", "second"), SemanticItem(scope="s", vector=unit(1, 0)))
    match = await backend.nearest("ns", "s", unit(1, 0), 0.9)
    assert match is not None and match.entry.response.message.text == "second"


CHECKS = [
    exact_round_trip,
    entries_expire,
    semantic_nearest,
    many_entries_use_the_graph,
    clear_by_namespace,
    replaced_entries_are_not_served_twice,
]
