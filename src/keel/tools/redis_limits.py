"""Token buckets in Redis, so several processes share one rate limit per tool (or credential).

Install with ``pip install 'keel[redis]'``. Each reservation is one Lua script, atomic on the
server and timed by the server's clock, so processes on machines with skewed clocks still agree.
The client is handed in (``redis.asyncio.Redis``): Keel does not decide how you connect.
"""

from __future__ import annotations

from typing import Any

from keel.errors import MissingDependencyError
from keel.tools.resilience import RateLimit

try:
    import redis.asyncio
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("redis", "redis", feature="Redis rate limits") from e

__all__ = ["RedisRateLimits"]

# KEYS[1] bucket; ARGV rate, burst, max_wait. Returns {granted (0/1), wait seconds as a string}.
_RESERVE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate end
if wait > max_wait then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
  return {0, tostring(wait)}
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate + max_wait) * 1000) + 1000)
return {1, tostring(wait)}
"""


class RedisRateLimits:
    """A ``RateLimitBackend`` whose buckets are Redis hashes under ``prefix``."""

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str = "keel:ratelimit:") -> None:
        self.client = client
        self.prefix = prefix
        self._script: Any = client.register_script(_RESERVE)

    async def reserve(self, key: str, limit: RateLimit) -> tuple[bool, float]:
        granted, wait = await self._script(
            keys=[self.prefix + key], args=[limit.rate, limit.burst, limit.max_wait]
        )
        return bool(int(granted)), float(wait)
