"""Per-tool resilience: retries with jittered backoff, a token bucket, a circuit breaker, a cap on
concurrent calls. Each tool gets its own ``ToolPolicy``; the registry consults it on every call.

All state is in-process (one event loop). Clocks are injectable so tests never sleep to check
arithmetic.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "CircuitBreaker",
    "InProcessRateLimits",
    "RateLimit",
    "RateLimitBackend",
    "RetryPolicy",
    "TokenBucket",
    "ToolPolicy",
]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a call that failed in a retryable way, with full-jitter exponential backoff.

    Only ``RetryableToolError`` and the exception types in ``retry_on`` are retried (and
    timeouts when ``retry_timeouts``); anything else fails at once, since repeating a call that
    failed for a lasting reason, or that may have had an effect, does harm.
    """

    attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 5.0
    retry_on: tuple[type[BaseException], ...] = ()
    retry_timeouts: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays cannot be negative")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): U(0, cap)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return (rng or random).uniform(0.0, cap)


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class RateLimit:
    """At most ``rate`` calls per second on average, bursts of up to ``burst``.

    A call that would have to wait longer than ``max_wait`` seconds for a token fails with a
    retryable ``rate_limited`` error instead of waiting.
    """

    rate: float
    burst: int = 1
    max_wait: float = 10.0
    per_credential: bool = False
    """One bucket per set of injected secret values (e.g. per API key) instead of per tool."""

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("RateLimit needs rate > 0 and burst >= 1")


class TokenBucket:
    """The classic token bucket; ``reserve`` takes a token now or says how long until one."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self.limit.burst), self._tokens + elapsed * self.limit.rate)
        self._stamp = now

    def reserve(self) -> float:
        """Take a token; returns 0 if one was free, else the wait before the reserved token."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.limit.rate

    def wait_needed(self) -> float:
        """Seconds until a token would be free, without taking one."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1.0 - self._tokens) / self.limit.rate

    def try_reserve(self) -> tuple[bool, float]:
        """Reserve a token unless the wait would exceed ``max_wait``: (granted, wait)."""
        needed = self.wait_needed()
        if needed > self.limit.max_wait:
            return False, needed
        return True, self.reserve()


class RateLimitBackend(Protocol):
    """Where token buckets live: in this process (the default) or shared, e.g. in Redis."""

    async def reserve(self, key: str, limit: RateLimit) -> tuple[bool, float]:
        """Take a token for ``key`` unless the wait exceeds ``limit.max_wait``: (granted, wait)."""
        ...


class InProcessRateLimits:
    """Token buckets in a dict: one process, one event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, key: str, limit: RateLimit) -> TokenBucket:
        found = self._buckets.get(key)
        if found is None or found.limit is not limit:
            found = self._buckets[key] = TokenBucket(limit, self._clock)
        return found

    async def reserve(self, key: str, limit: RateLimit) -> tuple[bool, float]:
        return self.bucket(key, limit).try_reserve()


class CircuitBreaker:
    """Stop calling a tool that keeps failing; let one trial call through after ``reset_after``.

    Closed -> (``threshold`` consecutive failures) -> open -> (``reset_after`` s) -> half-open:
    the next call is a trial; success closes, failure opens again.
    """

    def __init__(
        self,
        threshold: int = 5,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or reset_after < 0:
            raise ValueError("CircuitBreaker needs threshold >= 1 and reset_after >= 0")
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.reset_after else "open"

    def retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_after - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one trial at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def record(self, success: bool) -> None:
        self._trial = False
        if success:
            self.failures, self._opened_at = 0, None
            return
        self.failures += 1
        if self._opened_at is not None or self.failures >= self.threshold:
            self._opened_at = self._clock()


@dataclass
class ToolPolicy:
    """Everything that governs how one tool's calls run, plus its live state (bucket, breaker).

    ``max_result_chars`` bounds the text of a result the model sees; longer results are cut with
    a marker that says how much was dropped.
    """

    retry: RetryPolicy = NO_RETRY
    rate_limit: RateLimit | None = None
    breaker: CircuitBreaker | None = None
    max_concurrency: int | None = None
    max_result_chars: int | None = None
    limiter: RateLimitBackend | None = None
    """Where the rate limit's buckets live; default: in this process."""
    key: str = ""
    """The rate-limit key; the registry sets it to ``name@version`` when left empty."""
    _semaphore: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate_limit is not None and self.limiter is None:
            self.limiter = InProcessRateLimits()
        if self.max_concurrency is not None:
            if self.max_concurrency < 1:
                raise ValueError("max_concurrency must be at least 1")
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        if self.max_result_chars is not None and self.max_result_chars < 100:
            raise ValueError("max_result_chars must be at least 100")

    @property
    def semaphore(self) -> asyncio.Semaphore | None:
        return self._semaphore
