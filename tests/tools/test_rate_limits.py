"""Rate limits per credential, and shared across processes through a real Redis server."""

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Annotated

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from keel.llm import ToolCallPart
from keel.tools import RateLimit, Secret, ToolPolicy, ToolRegistry
from keel.tools.redis_limits import RedisRateLimits


class SwitchableKey:
    """A provider whose API key changes, like one per tenant."""

    def __init__(self) -> None:
        self.value = "key-tenant-a"

    def get(self, name: str) -> str:
        return self.value


def call(name: str) -> ToolCallPart:
    return ToolCallPart(id="1", name=name, arguments={})


def make_registry(policy: ToolPolicy, provider: SwitchableKey | None = None) -> ToolRegistry:
    registry = ToolRegistry(secrets=provider)

    if provider is None:

        @registry.tool(name="api", policy=policy)
        def api_plain() -> str:
            """Calls an API."""
            return "ok"
    else:

        @registry.tool(name="api", policy=policy)
        def api(key: Annotated[str, Secret("API_KEY")]) -> str:
            """Calls an API with a key."""
            return "ok"

    return registry


async def test_per_credential_limits_keep_one_bucket_per_key() -> None:
    provider = SwitchableKey()
    limit = RateLimit(rate=0.001, burst=1, max_wait=0.1, per_credential=True)
    registry = make_registry(ToolPolicy(rate_limit=limit), provider)
    assert (await registry.call(call("api"))).ok
    refused = await registry.call(call("api"))
    assert refused.error is not None and refused.error["type"] == "rate_limited"
    provider.value = "key-tenant-b"
    assert (await registry.call(call("api"))).ok
    # Without per_credential, both keys share the tool's one bucket.
    shared = make_registry(ToolPolicy(rate_limit=RateLimit(0.001, 1, 0.1)), provider)
    assert (await shared.call(call("api"))).ok
    provider.value = "key-tenant-a"
    assert not (await shared.call(call("api"))).ok


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
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


async def test_processes_share_one_limit_through_redis(redis_port: int) -> None:
    # Two registries with their own clients stand for two processes.
    first = redis.asyncio.Redis(port=redis_port)
    second = redis.asyncio.Redis(port=redis_port)
    limit = RateLimit(rate=0.001, burst=2, max_wait=0.1)
    try:
        a = make_registry(ToolPolicy(rate_limit=limit, limiter=RedisRateLimits(first)))
        b = make_registry(ToolPolicy(rate_limit=limit, limiter=RedisRateLimits(second)))
        results = [await a.call(call("api")), await b.call(call("api")), await a.call(call("api"))]
        assert [r.ok for r in results] == [True, True, False]
        error = results[2].error
        assert error is not None and error["type"] == "rate_limited" and error["retryable"]
        assert await first.exists("keel:ratelimit:api@1") == 1
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_bucket_reserves_with_a_wait_and_refills(redis_port: int) -> None:
    client = redis.asyncio.Redis(port=redis_port)
    limits = RedisRateLimits(client, prefix="test:")
    limit = RateLimit(rate=20.0, burst=1, max_wait=1.0)
    try:
        assert await limits.reserve("k", limit) == (True, 0.0)
        granted, wait = await limits.reserve("k", limit)
        assert granted and 0.0 < wait <= 0.05
        granted, wait = await limits.reserve("k", RateLimit(rate=20.0, burst=1, max_wait=0.01))
        assert not granted and wait > 0.01
        ttl = await client.pttl("test:k")
        assert 0 < ttl <= 2100
    finally:
        await client.aclose()


async def test_an_unreachable_redis_fails_open_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    no_retry = Retry(NoBackoff(), 0)
    client = redis.asyncio.Redis(port=_free_port(), socket_connect_timeout=0.5, retry=no_retry)
    registry = make_registry(
        ToolPolicy(rate_limit=RateLimit(rate=1.0), limiter=RedisRateLimits(client))
    )
    with caplog.at_level(logging.WARNING, logger="keel.tools"):
        result = await registry.call(call("api"))
    await client.aclose()
    assert result.ok
    assert "rate limiter for api unavailable" in caplog.text
