"""A worker process for the cross-process test: reserve and settle until the budget refuses."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from budget_ledgers import LedgerSpec, open_spec

from keel.budget.base import Budget, BudgetScope, Limits, Spend
from keel.errors import BudgetExceeded


def wait_at_barrier(folder: Path, parties: int = 2) -> None:
    """Leave a file in ``folder`` and wait until ``parties`` files are there."""
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < parties and time.monotonic() < deadline:
        time.sleep(0.005)


def spend_until_refused(spec: LedgerSpec, limit: int, step: int, barrier: str) -> int:
    """Reserve ``step`` tokens against the global day budget until refused; return how many
    reservations were granted (each settled at the full amount). Both workers wait at a file
    barrier (a file each in the folder ``barrier``) so that they really run at the same time."""

    async def main() -> int:
        ledger = open_spec(spec)
        budget = Budget(scope=BudgetScope.day(), limits=Limits(total_tokens=limit))
        granted = 0
        await ledger.spend([])  # connect before the start signal
        wait_at_barrier(Path(barrier))
        try:
            while True:
                try:
                    r = await ledger.reserve([budget], Spend(total_tokens=step, model_calls=1))
                except BudgetExceeded:
                    return granted
                granted += 1
                await ledger.settle(r, Spend(total_tokens=step, model_calls=1))
                # A real pause, as a model call would make: without it one process can take
                # SQLite's write lock 200 times in a row before the other is scheduled at all.
                await asyncio.sleep(0.001)
        finally:
            await ledger.aclose()

    return asyncio.run(main())
