"""Every cache backend passes the conformance suite; backend-specific behaviour below it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio
from cache_backend_conformance import CHECKS, entry, unit

from keel.cache.base import CacheBackend, SemanticItem
from keel.cache.redis_backend import RedisCacheBackend
from keel.cache.sqlite_backend import SQLiteCacheBackend
from keel.errors import CacheError


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_conformance(
    backend: CacheBackend, check: Callable[[CacheBackend], Awaitable[None]]
) -> None:
    await check(backend)


async def test_two_sqlite_handles_share_entries_and_vectors(tmp_path: Path) -> None:
    first = SQLiteCacheBackend(tmp_path / "c.db")
    second = SQLiteCacheBackend(tmp_path / "c.db")
    try:
        assert await second.nearest("ns", "s", unit(1, 0), 0.5) is None  # builds its index
        await first.put("ns", entry("k", "hello"), SemanticItem(scope="s", vector=unit(1, 0)))
        match = await second.nearest("ns", "s", unit(1, 0.01), 0.9)  # caught up from SQLite
        assert match is not None and match.entry.key == "k"
        await first.clear("ns")
        assert await second.nearest("ns", "s", unit(1, 0), 0.5) is None
    finally:
        await first.close()
        await second.close()


async def test_a_large_sqlite_index_is_saved_and_reloaded(tmp_path: Path) -> None:
    backend = SQLiteCacheBackend(tmp_path / "c.db", exact_below=4)
    items = [(entry(f"k{i}"), SemanticItem(scope="s", vector=unit(1, i, 0))) for i in range(10)]
    await backend.put_many("ns", items)
    assert await backend.nearest("ns", "s", unit(1, 3, 0), 0.99) is not None
    await backend.close()
    assert len(list((tmp_path / "c.db.index").iterdir())) == 1
    reopened = SQLiteCacheBackend(tmp_path / "c.db", exact_below=4)
    try:
        await reopened.put("ns", entry("new"), SemanticItem(scope="s", vector=unit(0, 0, 1)))
        match = await reopened.nearest("ns", "s", unit(1, 3, 0), 0.99)
        assert match is not None and match.entry.key == "k3"
        fresh = await reopened.nearest("ns", "s", unit(0, 0, 1), 0.99)
        assert fresh is not None and fresh.entry.key == "new"
    finally:
        await reopened.close()


async def test_a_closed_sqlite_cache_raises_a_cache_error(tmp_path: Path) -> None:
    backend = SQLiteCacheBackend(tmp_path / "c.db")
    await backend.close()
    await backend.close()
    with pytest.raises(CacheError, match="closed"):
        await backend.get("ns", "k")


async def test_redis_entries_carry_a_ttl_and_processes_share_vectors(redis_port: int) -> None:
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    first = RedisCacheBackend(redis.asyncio.Redis(port=redis_port), prefix=prefix, owns_client=True)
    second = RedisCacheBackend(
        redis.asyncio.Redis(port=redis_port), prefix=prefix, owns_client=True
    )
    try:
        assert await second.nearest("ns", "s", unit(1, 0), 0.5) is None
        await first.put("ns", entry("k", ttl=30), SemanticItem(scope="s", vector=unit(1, 0)))
        keys = [k async for k in first.client.scan_iter(match=f"{prefix}*:e:k")]
        assert len(keys) == 1 and 0 < await first.client.pttl(keys[0]) <= 30_000
        match = await second.nearest("ns", "s", unit(1, 0.01), 0.9)
        assert match is not None and match.entry.key == "k"
    finally:
        await first.close()
        await second.close()


async def test_an_unreachable_redis_raises_a_cache_error_without_the_url() -> None:
    client = redis.asyncio.Redis.from_url("redis://:hunter2@127.0.0.1:1/0")
    backend = RedisCacheBackend(client, location="127.0.0.1:1/0", owns_client=True)
    try:
        with pytest.raises(CacheError) as caught:
            await backend.get("ns", "k")
        assert "hunter2" not in str(caught.value)
    finally:
        await backend.close()


def test_a_decoding_redis_client_is_refused() -> None:
    with pytest.raises(ValueError, match="decode"):
        RedisCacheBackend(redis.asyncio.Redis(decode_responses=True))
