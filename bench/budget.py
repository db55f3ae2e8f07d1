"""Overhead of budgets per model call: reserve + settle on each ledger (SQLite, PostgreSQL, Redis).

Run: .venv/bin/python bench/budget.py [--calls 2000] [--repeats 3] [--only sqlite,postgres,redis]

For each ledger, two budgets apply to every call (the run's, and the tenant's for today, the
usual pair), and the figures are medians over repeats, in microseconds per call:
- ``ledger``: ``reserve`` + ``settle`` called directly on the ledger;
- ``round trip``: one ``SELECT 1`` (SQLite, PostgreSQL) or ``PING`` (Redis), for scale;
- ``model``: a ``BudgetedModel`` call (count the prompt, reserve, call, settle) minus a direct
  call of the same in-process ``FunctionModel`` (so the model's own time is not counted).
PostgreSQL (from the ``pgserver`` wheel, or Debian's) and ``redis-server`` are started here on
loopback ports and stopped at the end; both run on the same machine as the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from keel.budget import (  # noqa: E402
    Budget,
    BudgetedModel,
    BudgetLedger,
    BudgetMeter,
    BudgetScope,
    Limits,
    Spend,
)
from keel.llm.messages import UserMessage  # noqa: E402
from keel.llm.testing import FunctionModel  # noqa: E402
from pgserver_fixture import start_postgres  # noqa: E402 - a test helper, found via tests/

BUDGETS = [
    Budget(scope=BudgetScope.run("bench"), limits=Limits(total_tokens=10**12, model_calls=10**9)),
    Budget(scope=BudgetScope.tenant("acme"), limits=Limits(cost_usd=10**9, tool_calls=10**9)),
]
PROMPT = [UserMessage(content="What is the capital of France? Answer in one word.")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _per_call(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    for _ in range(min(50, calls)):  # warm up (connections, statement caches)
        await fn()
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / calls * 1e6


async def measure(
    ledger: BudgetLedger, calls: int, repeats: int, ping: Callable[[], Awaitable[object]]
) -> dict[str, float]:
    amount = Spend(input_tokens=30, output_tokens=64, total_tokens=94, model_calls=1)

    async def ledger_only() -> None:
        r = await ledger.reserve(BUDGETS, amount)
        await ledger.settle(r, amount)

    inner = FunctionModel(lambda call: "Paris")
    budgeted = BudgetedModel(inner, max_tokens=64)

    async def direct() -> object:
        return await inner.request(PROMPT)

    async def metered() -> object:
        return await budgeted.request(PROMPT)

    ledger_us, model_us, ping_us = [], [], []
    async with BudgetMeter(ledger, BUDGETS):
        for _ in range(repeats):
            ping_us.append(await _per_call(ping, calls))
            ledger_us.append(await _per_call(ledger_only, calls))
            base = await _per_call(direct, calls)
            model_us.append(await _per_call(metered, calls) - base)
    return {
        "ping": statistics.median(ping_us),
        "ledger": statistics.median(ledger_us),
        "model": statistics.median(model_us),
    }


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="sqlite,postgres,redis")
    args = parser.parse_args()
    wanted = args.only.split(",")
    results: dict[str, dict[str, float]] = {}
    if "sqlite" in wanted:
        from keel.budget.sqlite import SqliteBudgetLedger

        folder = Path(tempfile.mkdtemp(prefix="keel-bench-budget-"))
        sqlite = SqliteBudgetLedger(folder / "budget.db")

        async def select_one() -> object:
            return sqlite._db.execute("SELECT 1").fetchone()

        results["sqlite (WAL, synchronous=NORMAL)"] = await measure(
            sqlite, args.calls, args.repeats, select_one
        )
        await sqlite.aclose()
        shutil.rmtree(folder, ignore_errors=True)
    if "postgres" in wanted:
        from keel.budget.postgres import PostgresBudgetLedger

        server = start_postgres()
        try:
            pg = PostgresBudgetLedger(server.conninfo())

            async def pg_select_one() -> object:
                conn = await pg._connect()
                return await (await conn.execute("SELECT 1")).fetchone()

            results["postgres (loopback TCP)"] = await measure(
                pg, args.calls, args.repeats, pg_select_one
            )
            await pg.aclose()
        finally:
            server.stop()
    if "redis" in wanted:
        import redis.asyncio

        from keel.budget.redis import RedisBudgetLedger

        process, port = start_redis()
        try:
            client = redis.asyncio.Redis(port=port)
            rd = RedisBudgetLedger(client, close_client=True)
            results["redis (loopback TCP, Lua)"] = await measure(
                rd, args.calls, args.repeats, client.ping
            )
            await rd.aclose()
        finally:
            process.terminate()
            process.wait(10)
    print(f"budget overhead per model call, 2 budgets, {args.calls} calls x {args.repeats}")
    print(f"{'ledger':<36}{'round trip us':>15}{'reserve+settle us':>20}{'BudgetedModel us':>20}")
    for name, r in results.items():
        print(f"{name:<36}{r['ping']:>15.0f}{r['ledger']:>20.0f}{r['model']:>20.0f}")


if __name__ == "__main__":
    asyncio.run(main())
