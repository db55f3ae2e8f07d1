"""Start-to-result latency of ``print(1)``: plain subprocess, Keel cold, Keel warm pool.

Run: .venv/bin/python bench/sandbox.py [--runs 200] [--pool 2]

Each figure is the time from asking for a run to holding its result (stdout and exit code),
for the same program under the same interpreter (/usr/bin/python3):

- plain subprocess: ``python3 -c 'print(1)'`` with no isolation at all (the floor);
- Keel cold: ``BubblewrapSandbox.run``: start a sandbox, run, destroy it;
- Keel warm: ``WarmPool.run`` with a started sandbox waiting (the pool is given time to refill
  between runs, so this is the latency a caller sees when the pool keeps up);
- Keel warm back-to-back: the same pool with no pause, so refills compete with the runs and
  the pool may run dry (then a run starts cold).

Every Keel run has the full isolation of the defaults: all namespaces, seccomp, rlimits, and on a
root host its own uid and cgroups. Each result is checked, so a broken run cannot look fast.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from keel.sandbox import BubblewrapSandbox, Result, WarmPool

PYTHON = "/usr/bin/python3"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{name:<26} p50 {statistics.median(ms):6.1f} ms   p95 {percentile(ms, 0.95):6.1f} ms   "
        f"min {min(ms):5.1f} ms   ({len(ms)} runs)"
    )


async def timed(
    runs: int, once: Callable[[], Awaitable[bytes]], pause: Callable[[], Awaitable[None]]
) -> list[float]:
    times = []
    for _ in range(runs):
        await pause()
        start = time.perf_counter()
        out = await once()
        times.append(time.perf_counter() - start)
        if out != b"1\n":
            raise SystemExit(f"unexpected output {out!r}")
    return times


async def plain() -> bytes:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, "-c", "print(1)", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out


def checked(result: Result) -> bytes:
    if not result.ok:
        raise SystemExit(f"run failed: {result.exit_code} {result.stderr_text}")
    return result.stdout


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--pool", type=int, default=2, help="warm pool size")
    args = parser.parse_args()
    sandbox = BubblewrapSandbox()
    print(
        f"isolation: seccomp={sandbox.seccomp} cgroups={sandbox.cgroups} "
        f"own uid={sandbox.switch_uid}; {args.runs} runs of print(1)"
    )

    async def no_pause() -> None:
        return None

    report("plain subprocess", await timed(args.runs, plain, no_pause))

    async def cold() -> bytes:
        return checked(await sandbox.run("print(1)"))

    report("Keel cold", await timed(args.runs, cold, no_pause))

    async with WarmPool(sandbox, size=args.pool) as pool:

        async def warm() -> bytes:
            return checked(await pool.run("print(1)"))

        report("Keel warm (pool ready)", await timed(args.runs, warm, pool.fill))
        report("Keel warm back-to-back", await timed(args.runs, warm, no_pause))


if __name__ == "__main__":
    asyncio.run(main())
