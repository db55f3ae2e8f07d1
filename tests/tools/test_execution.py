"""Resilient execution: retries for retryable failures only, rate limits, breaker, concurrency,
and containment of tools that raise, hang, return junk or return megabytes."""

import asyncio
import datetime
import random
import sys
import threading
from pathlib import Path

import pytest

from keel.errors import RetryableToolError, ToolExecutionError
from keel.llm import ToolCallPart
from keel.observe import setup_tracing, shutdown_tracing
from keel.tools import CircuitBreaker, RateLimit, RetryPolicy, ToolPolicy, ToolRegistry
from keel.tools.resilience import TokenBucket


def call(name: str, **arguments: object) -> ToolCallPart:
    return ToolCallPart(id=f"id-{name}", name=name, arguments=arguments)


FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)


async def test_retryable_errors_are_retried_until_success() -> None:
    registry = ToolRegistry()
    seen: list[int] = []

    @registry.tool(policy=ToolPolicy(retry=FAST_RETRY))
    def flaky(n: int) -> str:
        """Fails twice, then works."""
        seen.append(n)
        if len(seen) < 3:
            raise RetryableToolError("upstream returned 503")
        return "ok"

    result = await registry.call(call("flaky", n=1))
    assert result.ok and result.value == "ok" and result.attempts == 3
    assert seen == [1, 1, 1]


async def test_non_retryable_errors_fail_at_once_and_exhausted_retries_say_retryable() -> None:
    registry = ToolRegistry()
    counts = {"plain": 0, "declared": 0, "always": 0}

    @registry.tool(policy=ToolPolicy(retry=FAST_RETRY))
    def plain() -> str:
        """Raises a lasting error."""
        counts["plain"] += 1
        raise ToolExecutionError("no such account", hint="check the account id")

    @registry.tool(policy=ToolPolicy(retry=RetryPolicy(3, 0.001, 0.002, retry_on=(OSError,))))
    def declared() -> str:
        """Raises a declared retryable exception type."""
        counts["declared"] += 1
        raise ConnectionResetError("peer reset")

    @registry.tool(policy=ToolPolicy(retry=FAST_RETRY))
    def always() -> str:
        """Always retryable, never succeeds."""
        counts["always"] += 1
        raise RetryableToolError("still down")

    plain_result = await registry.call(call("plain"))
    assert counts["plain"] == 1
    assert plain_result.error == {
        "type": "tool_error",
        "message": "no such account",
        "retryable": False,
        "hint": "check the account id",
    }
    declared_result = await registry.call(call("declared"))
    assert counts["declared"] == 3 and declared_result.attempts == 3
    assert declared_result.failure is not None and declared_result.failure.retryable
    always_result = await registry.call(call("always"))
    assert counts["always"] == 3 and always_result.error is not None
    assert always_result.error["retryable"] is True


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=3.0)
    rng = random.Random(7)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (5, 3.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8 and min(delays) < cap * 0.2
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


async def test_timeouts_are_retried_only_when_the_policy_says_so() -> None:
    registry = ToolRegistry()
    counts = {"a": 0, "b": 0}

    @registry.tool(timeout=0.02, policy=ToolPolicy(retry=FAST_RETRY))
    async def once() -> str:
        """Hangs; not retried."""
        counts["a"] += 1
        await asyncio.sleep(5)
        return "never"

    retry = RetryPolicy(2, 0.001, 0.002, retry_timeouts=True)

    @registry.tool(timeout=0.02, policy=ToolPolicy(retry=retry))
    async def twice() -> str:
        """Hangs; retried once."""
        counts["b"] += 1
        await asyncio.sleep(5)
        return "never"

    a = await registry.call(call("once"))
    b = await registry.call(call("twice"))
    assert a.error is not None and a.error["type"] == "timeout" and not a.error["retryable"]
    assert b.error is not None and b.error["retryable"]
    assert counts == {"a": 1, "b": 2}


def test_token_bucket_arithmetic() -> None:
    now = [100.0]
    bucket = TokenBucket(RateLimit(rate=2.0, burst=3), clock=lambda: now[0])
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.wait_needed() == pytest.approx(0.5)
    assert bucket.reserve() == pytest.approx(0.5)
    now[0] += 2.0
    assert bucket.wait_needed() == 0.0
    now[0] += 100.0
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        RateLimit(rate=0)


async def test_rate_limit_waits_briefly_or_refuses_with_a_retryable_error() -> None:
    registry = ToolRegistry()

    @registry.tool(policy=ToolPolicy(rate_limit=RateLimit(rate=0.001, burst=2, max_wait=1.0)))
    def scarce() -> int:
        """Two calls, then a very long wait."""
        return 1

    @registry.tool(policy=ToolPolicy(rate_limit=RateLimit(rate=100.0, burst=1, max_wait=1.0)))
    def paced() -> int:
        """One call per 10 ms."""
        return 2

    results = [await registry.call(call("scarce")) for _ in range(3)]
    assert [r.ok for r in results] == [True, True, False]
    error = results[2].error
    assert error is not None and error["type"] == "rate_limited" and error["retryable"]
    assert error["hint"].startswith("wait ")
    paced_results = await asyncio.gather(*(registry.call(call("paced")) for _ in range(3)))
    assert all(r.ok for r in paced_results)


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, reset_after=10.0, clock=lambda: now[0])
    breaker.record(False)
    assert breaker.allow() and breaker.state == "closed"
    breaker.record(False)
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in() == pytest.approx(10.0)
    now[0] = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record(False)
    assert breaker.state == "open"
    now[0] = 20.0
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed" and breaker.failures == 0


async def test_open_breaker_stops_calls_to_a_failing_tool() -> None:
    registry = ToolRegistry()
    calls = []

    @registry.tool(policy=ToolPolicy(breaker=CircuitBreaker(threshold=2, reset_after=60)))
    def down() -> str:
        """Always fails."""
        calls.append(1)
        raise RuntimeError("connection refused")

    first = [await registry.call(call("down")) for _ in range(2)]
    assert all(r.error is not None and r.error["type"] == "tool_error" for r in first)
    third = await registry.call(call("down"))
    assert len(calls) == 2
    assert third.error is not None and third.error["type"] == "circuit_open"
    assert third.error["retryable"] and "try again in" in third.error["hint"]
    # Invalid arguments do not count as the tool failing, and never reach it.
    assert (await registry.call(call("down", x=1))).error["type"] == "invalid_arguments"  # type: ignore[index]


async def test_concurrency_limit_caps_calls_in_flight() -> None:
    registry = ToolRegistry()
    active = 0
    peak = 0

    @registry.tool(policy=ToolPolicy(max_concurrency=2))
    async def work() -> int:
        """Counts how many run at once."""
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return peak

    results = await asyncio.gather(*(registry.call(call("work")) for _ in range(6)))
    assert all(r.ok for r in results)
    assert peak == 2


async def test_containment_of_junk_huge_hanging_and_exiting_tools() -> None:
    registry = ToolRegistry(max_result_chars=1000)
    release = threading.Event()

    @registry.tool
    def junk() -> object:
        """Returns an object that is not JSON."""
        return threading.Lock()

    @registry.tool
    def huge() -> str:
        """Returns five megabytes."""
        return "x" * 5_000_000

    @registry.tool(policy=ToolPolicy(max_result_chars=200))
    def rows() -> list[dict[str, int]]:
        """Returns many rows."""
        return [{"i": i} for i in range(1000)]

    @registry.tool(timeout=0.05)
    def hangs_in_a_thread() -> str:
        """Blocks its thread until released."""
        release.wait(10)
        return "late"

    @registry.tool
    def exits() -> str:
        """Calls sys.exit."""
        sys.exit(3)

    @registry.tool
    def structured() -> dict[str, object]:
        """Returns values json cannot encode but pydantic can."""
        return {"when": datetime.date(1970, 1, 2), "set": [1, 3]}

    junk_result = await registry.call(call("junk"))
    assert junk_result.error is not None
    assert junk_result.error["type"] == "unserialisable_result"
    assert "returned a lock" in junk_result.error["message"]

    big = await registry.call(call("huge"))
    assert big.ok and big.truncated
    text = big.content()
    assert text.startswith("x" * 1000) and len(text) < 1200
    assert "the result had 5,000,000 characters, only the first 1,000 are shown" in text
    assert big.value == text

    cut = await registry.call(call("rows"))
    assert cut.truncated and "only the first 200" in cut.content()

    hung = await registry.call(call("hangs_in_a_thread"))
    release.set()
    assert hung.error is not None and hung.error["type"] == "timeout"

    exited = await registry.call(call("exits"))
    assert exited.error is not None and exited.error["message"] == "SystemExit: 3"

    fine = await registry.call(call("structured"))
    assert fine.ok and fine.content() == '{"when":"1970-01-02","set":[1,3]}'


async def test_each_call_is_a_span_with_the_error_type(tmp_path: Path) -> None:
    store = setup_tracing(tmp_path / "traces.db")
    registry = ToolRegistry()

    @registry.tool(version="1.2.0")
    def boom() -> str:
        """Fails."""
        raise ValueError("bad")

    try:
        await registry.call(call("boom"))
        trace_id = store.last_trace_id()
        assert trace_id is not None
        span = store.trace(trace_id)[0]
    finally:
        shutdown_tracing()
    assert span.name == "execute_tool boom"
    assert span.status == "error" and span.status_message == "ValueError: bad"
    assert span.attributes["error.type"] == "tool_error"
    assert span.attributes["keel.tool.version"] == "1.2.0"
    assert span.attributes["gen_ai.tool.name"] == "boom"


async def test_async_tools_that_wait_resume_and_see_their_cancellation() -> None:
    registry = ToolRegistry()
    cleaned: list[str] = []

    @registry.tool
    async def waits(n: int) -> int:
        """Yields to the loop n times."""
        total = 0
        for i in range(n):
            await asyncio.sleep(0)
            total += i
        return total

    @registry.tool(timeout=0.02)
    async def cleans_up() -> str:
        """Hangs, but cleans up when cancelled."""
        try:
            await asyncio.sleep(5)
        finally:
            cleaned.append("done")
        return "never"

    assert (await registry.call(call("waits", n=5))).value == 10
    timed_out = await registry.call(call("cleans_up"))
    assert timed_out.error is not None and timed_out.error["type"] == "timeout"
    assert cleaned == ["done"]
