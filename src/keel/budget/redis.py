"""``RedisBudgetLedger``: budget counters in Redis, reserved and settled by atomic Lua scripts.

Install with ``pip install 'keel[redis]'``. Per budget key there are three Redis keys: a hash
of used counters (and the last limits seen), a hash of what open reservations hold, and a sorted
set of those reservations by expiry (the member carries its amounts, so an expired one can be
given back without any other record). Both scripts run atomically on the server and use its
clock, so processes on machines with skewed clocks agree. The client is handed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from keel.budget.base import (
    COUNTERS,
    Budget,
    BudgetLedger,
    Limits,
    Reservation,
    ScopeSpend,
    Spend,
    budget_exceeded,
    day_filter,
)
from keel.errors import MissingDependencyError, StoreError

try:
    import redis.asyncio
    import redis.exceptions
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("redis", "redis", feature="The Redis budget ledger") from e

__all__ = ["RedisBudgetLedger"]

_N = len(COUNTERS)

# Shared Lua: give back the reservations of one key that expired before ``now``.
_PURGE = """
local function purge(held, exp, now)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  for _, member in ipairs(gone) do
    local i = 0
    for v in string.gmatch(string.sub(member, string.find(member, '|') + 1), '[^,]+') do
      i = i + 1
      local x = tonumber(v)
      if x ~= 0 then redis.call('HINCRBYFLOAT', held, COUNTERS[i], -x) end
    end
    redis.call('ZREM', exp, member)
  end
end
"""

_COUNTERS_LUA = "local COUNTERS = {" + ", ".join(f"'{c}'" for c in COUNTERS) + "}\n"

# KEYS: per budget (used, held, exp), then the scopes set.
# ARGV: ttl, member, n, amounts (N), per budget: limits (N, '' = none) and limits JSON.
_RESERVE = (
    _COUNTERS_LUA
    + _PURGE
    + f"""
local N = {_N}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local member = ARGV[2]
local n = tonumber(ARGV[3])
local amount = {{}}
for c = 1, N do amount[c] = tonumber(ARGV[3 + c]) end
local taken = {{}}
for b = 0, n - 1 do
  local used, held, exp = KEYS[3 * b + 1], KEYS[3 * b + 2], KEYS[3 * b + 3]
  purge(held, exp, now)
  local u = redis.call('HMGET', used, unpack(COUNTERS))
  local h = redis.call('HMGET', held, unpack(COUNTERS))
  local base = 3 + N + b * (N + 1)
  for c = 1, N do
    local x = (tonumber(u[c]) or 0) + math.max(0, tonumber(h[c]) or 0)
    taken[b * N + c] = x
    local limit = ARGV[base + c]
    if limit ~= '' and x + amount[c] > tonumber(limit) + 1e-9 then
      return {{0, b, c, tostring(x)}}
    end
  end
end
local out = {{1, tostring(now + ttl)}}
for b = 0, n - 1 do
  local used, held, exp = KEYS[3 * b + 1], KEYS[3 * b + 2], KEYS[3 * b + 3]
  for c = 1, N do
    if amount[c] ~= 0 then redis.call('HINCRBYFLOAT', held, COUNTERS[c], amount[c]) end
    out[#out + 1] = tostring(taken[b * N + c])
  end
  redis.call('ZADD', exp, now + ttl, member)
  redis.call('HSET', used, 'limits', ARGV[3 + N + b * (N + 1) + N + 1])
  redis.call('SADD', KEYS[#KEYS], string.sub(used, 1 + tonumber(ARGV[#ARGV])))
end
return out
"""
)

# KEYS: per reservation key (used, held, exp), then the scopes set. ARGV: member, actual (N),
# prefix length.
_SETTLE = (
    _COUNTERS_LUA
    + f"""
local N = {_N}
local member = ARGV[1]
local amount = {{}}
local i = 0
for v in string.gmatch(string.sub(member, string.find(member, '|') + 1), '[^,]+') do
  i = i + 1
  amount[i] = tonumber(v)
end
for b = 0, (#KEYS - 1) / 3 - 1 do
  local used, held, exp = KEYS[3 * b + 1], KEYS[3 * b + 2], KEYS[3 * b + 3]
  if redis.call('ZREM', exp, member) == 1 then
    for c = 1, N do
      if amount[c] ~= 0 then redis.call('HINCRBYFLOAT', held, COUNTERS[c], -amount[c]) end
    end
  end
  for c = 1, N do
    local x = tonumber(ARGV[1 + c])
    if x ~= 0 then redis.call('HINCRBYFLOAT', used, COUNTERS[c], x) end
  end
  redis.call('SADD', KEYS[#KEYS], string.sub(used, 1 + tonumber(ARGV[N + 2])))
end
return 1
"""
)


class RedisBudgetLedger(BudgetLedger):
    """Budget counters in Redis under ``prefix`` (a ``redis.asyncio.Redis`` client).

    ``aclose`` closes the client only with ``close_client=True`` (the client is yours otherwise).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "keel:budget:",
        close_client: bool = False,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.close_client = close_client
        self._reserve: Any = client.register_script(_RESERVE)
        self._settle: Any = client.register_script(_SETTLE)

    def _keys(self, key: str) -> list[str]:
        p = self.prefix
        return [f"{p}used:{key}", f"{p}held:{key}", f"{p}exp:{key}"]

    async def reserve(
        self,
        budgets: Sequence[Budget],
        amount: Spend,
        *,
        ttl: float = 300.0,
        now: datetime | None = None,
    ) -> Reservation:
        rid = Reservation.new_id()
        keys = [b.scope.key(now) for b in budgets]
        member = rid + "|" + ",".join(repr(v) for v in amount.values())
        redis_keys = [k for key in keys for k in self._keys(key)] + [f"{self.prefix}scopes"]
        args: list[Any] = [ttl, member, len(budgets), *amount.values()]
        for budget in budgets:
            bounds = {c: v for c, v in budget.limits.items()}
            args.extend(repr(bounds[c]) if c in bounds else "" for c in COUNTERS)
            args.append(budget.limits.model_dump_json(exclude_none=True))
        args.append(len(f"{self.prefix}used:"))
        try:
            out = await self._reserve(keys=redis_keys, args=args)
        except redis.exceptions.RedisError as e:
            raise StoreError(f"cannot reserve in the Redis budget ledger: {e}") from e
        if int(out[0]) == 0:
            b, c = int(out[1]), int(out[2]) - 1
            counter = COUNTERS[c]
            bound = dict(budgets[b].limits.items())[counter]
            raise budget_exceeded(keys[b], counter, float(out[3]), bound, amount.values()[c])
        expires = float(out[1])
        remaining: dict[str, dict[str, float]] = {}
        for b, budget in enumerate(budgets):
            taken = [float(v) for v in out[2 + b * _N : 2 + (b + 1) * _N]]
            remaining[keys[b]] = {
                c: bound - taken[COUNTERS.index(c)] - getattr(amount, c)
                for c, bound in budget.limits.items()
            }
        return Reservation(rid, tuple(keys), amount, expires, remaining)

    async def settle(self, reservation: Reservation, actual: Spend) -> None:
        member = reservation.id + "|" + ",".join(repr(v) for v in reservation.amount.values())
        redis_keys = [k for key in reservation.keys for k in self._keys(key)]
        redis_keys.append(f"{self.prefix}scopes")
        args = [member, *actual.values(), len(f"{self.prefix}used:")]
        try:
            await self._settle(keys=redis_keys, args=args)
        except redis.exceptions.RedisError as e:
            raise StoreError(f"cannot settle in the Redis budget ledger: {e}") from e

    async def spend(self, keys: Sequence[str]) -> list[ScopeSpend]:
        out: list[ScopeSpend] = []
        try:
            now = await self.client.time()
            stamp = float(now[0]) + float(now[1]) / 1e6
            for key in keys:
                used_k, _, exp_k = self._keys(key)
                used = await self.client.hmget(used_k, [*COUNTERS, "limits"])
                # Reservations past their expiry no longer count, even before a purge.
                live = await self.client.zrangebyscore(exp_k, stamp, "+inf")
                reserved = [0.0] * _N
                for member in live:
                    text = member.decode() if isinstance(member, bytes) else str(member)
                    for i, v in enumerate(text.split("|", 1)[1].split(",")):
                        reserved[i] += float(v)
                raw_limits = used[_N]
                limits = None
                if raw_limits:
                    limits = Limits.model_validate(json.loads(raw_limits))
                values = [float(v) if v is not None else 0.0 for v in used[:_N]]
                out.append(ScopeSpend(key, Spend.of(values), Spend.of(reserved), limits))
        except redis.exceptions.RedisError as e:
            raise StoreError(f"cannot read the Redis budget ledger: {e}") from e
        return out

    async def scopes(self, *, day: str | date | None = None) -> list[str]:
        try:
            members = await self.client.smembers(f"{self.prefix}scopes")
        except redis.exceptions.RedisError as e:
            raise StoreError(f"cannot list the Redis budget ledger: {e}") from e
        keys = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        return day_filter(keys, day)

    async def aclose(self) -> None:
        if self.close_client:
            await self.client.aclose()
