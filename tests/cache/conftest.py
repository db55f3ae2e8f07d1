"""Fixtures of the cache tests: a real redis-server, and each backend over it or a SQLite file."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio

from keel.cache.base import CacheBackend
from keel.cache.redis_backend import RedisCacheBackend
from keel.cache.sqlite_backend import SQLiteCacheBackend
from redis_fixture import redis_port  # noqa: F401


@pytest.fixture(params=["sqlite", "redis"])
async def backend(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_port: int,  # noqa: F811
) -> AsyncIterator[CacheBackend]:
    """Each backend, empty: a fresh SQLite file, or a fresh key prefix on the Redis server."""
    made: CacheBackend
    if request.param == "sqlite":
        made = SQLiteCacheBackend(tmp_path / "cache.db", exact_below=4)
    else:
        client = redis.asyncio.Redis(port=redis_port)
        made = RedisCacheBackend(
            client, prefix=f"test:{uuid.uuid4().hex[:8]}:", exact_below=4, owns_client=True
        )
    yield made
    await made.close()
