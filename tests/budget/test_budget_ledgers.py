"""One conformance suite for every BudgetLedger: SQLite file, real PostgreSQL, real Redis."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from budget_ledgers import LedgerSpec
from budget_worker import spend_until_refused

from keel.budget import Budget, BudgetLedger, BudgetScope, Limits, Spend, utc_day
from keel.errors import BudgetExceeded

Open = Callable[[], BudgetLedger]


def run_budget(run_id: str = "r1", **limits: float) -> Budget:
    return Budget(scope=BudgetScope.run(run_id), limits=Limits(**limits))  # type: ignore[arg-type]


async def test_reserve_settle_releases_the_unused_part(open_ledger: Open) -> None:
    ledger = open_ledger()
    budget = run_budget(total_tokens=100)
    held = await ledger.reserve([budget], Spend(total_tokens=80, model_calls=1))
    assert held.remaining == {"run:r1": {"total_tokens": 20.0}}
    [during] = await ledger.spend(["run:r1"])
    assert during.reserved.total_tokens == 80 and during.used.total_tokens == 0
    with pytest.raises(BudgetExceeded):
        await ledger.reserve([budget], Spend(total_tokens=30))
    await ledger.settle(held, Spend(total_tokens=25, model_calls=1))
    [after] = await ledger.spend(["run:r1"])
    assert after.used.total_tokens == 25 and after.used.model_calls == 1
    assert after.reserved.total_tokens == 0
    assert after.limits == Limits(total_tokens=100)
    again = await ledger.reserve([budget], Spend(total_tokens=75))  # exactly to the limit
    assert again.remaining["run:r1"]["total_tokens"] == 0


async def test_a_refusal_names_the_scope_and_limit_and_holds_nothing(open_ledger: Open) -> None:
    ledger = open_ledger()
    run = run_budget(total_tokens=1000)
    tenant = Budget(scope=BudgetScope.tenant("acme"), limits=Limits(cost_usd=0.05))
    first = await ledger.reserve([run, tenant], Spend(total_tokens=100, cost_usd=0.04))
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve([run, tenant], Spend(total_tokens=100, cost_usd=0.02))
    e = caught.value
    assert e.scope == f"tenant:acme@{utc_day()}" and e.limit == "cost_usd"
    assert e.used == pytest.approx(0.04) and e.maximum == 0.05 and e.requested == 0.02
    # The refused reservation left the run budget (which had room) untouched too.
    [run_spend] = await ledger.spend(["run:r1"])
    assert run_spend.reserved.total_tokens == 100
    await ledger.settle(first, Spend(total_tokens=90, cost_usd=0.03))
    [run_spend, tenant_spend] = await ledger.spend(["run:r1", f"tenant:acme@{utc_day()}"])
    assert run_spend.used.total_tokens == 90 and tenant_spend.used.cost_usd == pytest.approx(0.03)


async def test_every_counter_is_enforced(open_ledger: Open) -> None:
    ledger = open_ledger()
    for counter in ("input_tokens", "output_tokens", "model_calls", "tool_calls", "wall_time_s"):
        budget = run_budget(f"r-{counter}", **{counter: 2})
        await ledger.reserve([budget], Spend(**{counter: 2}))
        with pytest.raises(BudgetExceeded) as caught:
            await ledger.reserve([budget], Spend(**{counter: 1}))
        assert caught.value.limit == counter


async def test_day_budgets_roll_over_at_utc_midnight(open_ledger: Open) -> None:
    ledger = open_ledger()
    tenant = Budget(scope=BudgetScope.tenant("acme"), limits=Limits(model_calls=1))
    late = datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC)
    held = await ledger.reserve([tenant], Spend(model_calls=1), now=late)
    await ledger.settle(held, Spend(model_calls=1))
    with pytest.raises(BudgetExceeded):
        await ledger.reserve([tenant], Spend(model_calls=1), now=late)
    next_day = await ledger.reserve([tenant], Spend(model_calls=1), now=late + timedelta(seconds=2))
    assert next_day.keys == ("tenant:acme@2026-11-25",)
    assert await ledger.scopes(day="2026-11-24") == ["tenant:acme@2026-11-24"]


async def test_a_new_ledger_on_the_same_store_keeps_the_days_spend(open_ledger: Open) -> None:
    first = open_ledger()
    day = Budget(scope=BudgetScope.day(), limits=Limits(total_tokens=50))
    held = await first.reserve([day], Spend(total_tokens=40))
    await first.settle(held, Spend(total_tokens=40))
    await first.aclose()
    restarted = open_ledger()
    [spend] = await restarted.spend([BudgetScope.day().key()])
    assert spend.used.total_tokens == 40
    with pytest.raises(BudgetExceeded):
        await restarted.reserve([day], Spend(total_tokens=11))
    assert BudgetScope.day().key() in await restarted.scopes(day=utc_day())


async def test_an_unsettled_reservation_expires(open_ledger: Open) -> None:
    ledger = open_ledger()
    budget = run_budget(total_tokens=100)
    await ledger.reserve([budget], Spend(total_tokens=90), ttl=0.3)  # never settled: a crash
    with pytest.raises(BudgetExceeded):
        await ledger.reserve([budget], Spend(total_tokens=20))
    await asyncio.sleep(0.5)
    [spend] = await ledger.spend(["run:r1"])
    assert spend.reserved.total_tokens == 0 and spend.used.total_tokens == 0
    await ledger.reserve([budget], Spend(total_tokens=100))


async def test_a_late_settle_of_an_expired_reservation_still_counts_once(
    open_ledger: Open,
) -> None:
    ledger = open_ledger()
    budget = run_budget(total_tokens=100)
    held = await ledger.reserve([budget], Spend(total_tokens=60), ttl=0.2)
    await asyncio.sleep(0.3)
    await ledger.reserve([budget], Spend(total_tokens=10))  # purges the expired one
    await ledger.settle(held, Spend(total_tokens=50))
    [spend] = await ledger.spend(["run:r1"])
    assert spend.used.total_tokens == 50 and spend.reserved.total_tokens == 10


async def test_concurrent_reservations_in_one_process_never_overshoot(open_ledger: Open) -> None:
    ledgers = [open_ledger() for _ in range(3)]
    budget = Budget(scope=BudgetScope.day(), limits=Limits(tool_calls=10))

    async def one(ledger: BudgetLedger) -> bool:
        try:
            await ledger.reserve([budget], Spend(tool_calls=1))
        except BudgetExceeded:
            return False
        return True

    granted = await asyncio.gather(*(one(ledgers[i % 3]) for i in range(30)))
    assert sum(granted) == 10


async def test_two_processes_share_one_day_budget_without_overshoot(
    open_ledger: Open, ledger_spec: LedgerSpec, tmp_path: Path
) -> None:
    limit, step = 1400, 7
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    context = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        counts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool, spend_until_refused, ledger_spec, limit, step, str(barrier)
                )
                for _ in "ab"
            )
        )
    [spend] = await open_ledger().spend([BudgetScope.day().key()])
    assert spend.used.total_tokens == sum(counts) * step
    assert spend.used.total_tokens <= limit
    assert sum(counts) == limit // step  # both stopped only when the budget was full
    assert min(counts) > 0, counts  # and they really competed for it
    assert spend.reserved.total_tokens == 0
