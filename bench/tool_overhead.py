"""Per-call overhead of ``ToolRegistry.call`` around a no-op tool (validation, resilience, tracing).

Run: .venv/bin/python bench/tool_overhead.py [--calls 20000] [--repeats 5]

Each tracing setup runs in a fresh interpreter (OpenTelemetry allows one global provider):
- ``no-provider``: OpenTelemetry API only, no SDK provider set (spans are no-ops);
- ``sdk``: an SDK ``TracerProvider`` with no exporter (spans are built, then dropped);
- ``sqlite``: Keel's default, ``setup_tracing`` to a SQLite trace store (one row per span).
In each, the figures are the median over repeats of (time per ``registry.call``) minus (time per
direct ``await`` of the same function), in microseconds, for: an async no-op with the default
policy; the same with every resilience feature on (retry policy, token bucket, circuit breaker,
concurrency cap); and a sync no-op (which runs in the tool thread pool).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(mode: str, calls: int, repeats: int) -> dict[str, float]:
    from keel.llm.messages import ToolCallPart
    from keel.tools import CircuitBreaker, RateLimit, RetryPolicy, ToolPolicy, ToolRegistry

    if mode == "sdk":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
    elif mode == "sqlite":
        from keel.observe import setup_tracing

        setup_tracing(Path(tempfile.mkdtemp()) / "traces.db")

    registry = ToolRegistry()

    async def noop(x: int) -> int:
        """Returns its argument."""
        return x

    def sync_noop(x: int) -> int:
        """Returns its argument."""
        return x

    registry.register(noop, name="plain")
    registry.register(
        noop,
        name="guarded",
        policy=ToolPolicy(
            retry=RetryPolicy(attempts=3, retry_on=(ConnectionError,)),
            rate_limit=RateLimit(rate=1e9, burst=1_000_000),
            breaker=CircuitBreaker(threshold=5, reset_after=30),
            max_concurrency=8,
        ),
    )
    registry.register(sync_noop, name="sync")

    async def per_call(name: str, n: int) -> float:
        call = ToolCallPart(id="c", name=name, arguments={"x": 1})
        start = time.perf_counter()
        for _ in range(n):
            result = await registry.call(call)
        elapsed = time.perf_counter() - start
        assert result.ok and result.value == 1, result
        return elapsed / n

    async def direct(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await noop(1)
        return (time.perf_counter() - start) / n

    async def run() -> dict[str, float]:
        figures: dict[str, list[float]] = {"async": [], "async+resilience": [], "sync": []}
        await per_call("plain", 1000)  # warm up
        for _ in range(repeats):
            base = await direct(calls)
            figures["async"].append(await per_call("plain", calls) - base)
            figures["async+resilience"].append(await per_call("guarded", calls) - base)
            figures["sync"].append(await per_call("sync", max(1, calls // 10)) - base)
        return {k: statistics.median(v) * 1e6 for k, v in figures.items()}

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=["no-provider", "sdk", "sqlite"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.calls, args.repeats)))
        return
    print(f"per-call overhead in microseconds (median of {args.repeats} x {args.calls} calls)")
    print(f"{'tracing':<12} {'async no-op':>12} {'+resilience':>12} {'sync no-op':>12}")
    for mode in ("no-provider", "sdk", "sqlite"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--calls",
                str(args.calls),
                "--repeats",
                str(args.repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        f = json.loads(out)
        print(f"{mode:<12} {f['async']:>12.1f} {f['async+resilience']:>12.1f} {f['sync']:>12.1f}")
    print("goal: < 50 us for validation + resilience + tracing around a no-op tool")


if __name__ == "__main__":
    main()
