"""``[tools] redis_url`` (default ``[shared] redis_url``): registries built from the same settings
share one Redis bucket per tool, as processes of one deployment must."""

from pathlib import Path

import pytest
import redis.asyncio
from test_rate_limits import call, redis_port  # noqa: F401 - the module's redis-server fixture

from keel.config import KeelSettings
from keel.errors import ConfigError
from keel.tools import RateLimit, ToolPolicy, ToolRegistry
from keel.tools.redis_limits import RedisRateLimits
from keel.tools.registry import rate_limits_from_settings


def _registry(settings: KeelSettings) -> ToolRegistry:
    registry = ToolRegistry.from_settings(settings)

    @registry.tool(name="api", policy=ToolPolicy(rate_limit=RateLimit(0.001, 2, 0.1)))
    def api() -> str:
        """Calls an API."""
        return "ok"

    return registry


async def test_two_registries_from_the_same_settings_share_one_bucket(
    redis_port: int,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = f"redis://127.0.0.1:{redis_port}/3"
    settings = KeelSettings(data_dir=tmp_path, shared={"redis_url": url})  # type: ignore[arg-type]
    assert settings.tools.redis_url == url
    a, b = _registry(settings), _registry(settings)
    results = [await a.call(call("api")), await b.call(call("api")), await b.call(call("api"))]
    assert [r.ok for r in results] == [True, True, False]
    assert results[2].error is not None and results[2].error["type"] == "rate_limited"
    client = redis.asyncio.Redis.from_url(url)
    try:
        assert await client.exists("keel:ratelimit:api@1") == 1
    finally:
        await client.aclose()
    # Without a Redis URL, each registry keeps its own in-process bucket.
    local = KeelSettings(data_dir=tmp_path)
    assert rate_limits_from_settings(local) is None
    c, d = _registry(local), _registry(local)
    assert (await c.call(call("api"))).ok and (await d.call(call("api"))).ok


def test_tools_redis_url_overrides_shared_and_bad_urls_are_config_errors(tmp_path: Path) -> None:
    settings = KeelSettings(
        data_dir=tmp_path,
        shared={"redis_url": "redis://127.0.0.1:1/0"},  # type: ignore[arg-type]
        tools={"redis_url": "redis://127.0.0.1:2/1", "rate_limit_prefix": "t:"},  # type: ignore[arg-type]
    )
    backend = rate_limits_from_settings(settings)
    assert isinstance(backend, RedisRateLimits) and backend.prefix == "t:"
    with pytest.raises(ConfigError, match=r"tools\.redis_url"):
        rate_limits_from_settings(
            KeelSettings(data_dir=tmp_path, tools={"redis_url": "nope://x"})  # type: ignore[arg-type]
        )
