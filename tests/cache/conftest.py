"""Fixtures of the cache tests: a real redis-server, and each backend over it or a SQLite file."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from keel.cache.base import CacheBackend
from keel.cache.redis_backend import RedisCacheBackend
from keel.cache.sqlite_backend import SQLiteCacheBackend


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian package redis-server; see Makefile)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(params=["sqlite", "redis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, redis_port: int
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
