"""Ledger factories for the budget tests: a SQLite file, a real PostgreSQL and a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from budget_ledgers import LedgerSpec, open_spec

from keel.budget.base import BudgetLedger
from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401
from redis_fixture import redis_port  # noqa: F401


@pytest.fixture(scope="session")
def budget_dsn(postgres_server: PostgresServer) -> str:  # noqa: F811
    return postgres_server.create_database("keel_budget")


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def ledger_spec(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerSpec:
    """A fresh, empty store of each backend (a new file, schema or key prefix per test)."""
    fresh = "t" + uuid.uuid4().hex[:12]
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "budget.db"))
    if request.param == "postgres":
        dsn = request.getfixturevalue("budget_dsn")
        return ("postgres", f"{dsn}|{fresh}")
    port = request.getfixturevalue("redis_port")
    return ("redis", f"{port}|keel:{fresh}:")


@pytest.fixture
async def open_ledger(ledger_spec: LedgerSpec) -> AsyncIterator[Callable[[], BudgetLedger]]:
    """Opens ledgers on this test's store; all are closed at the end."""
    opened: list[BudgetLedger] = []

    def make() -> BudgetLedger:
        ledger = open_spec(ledger_spec)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        await ledger.aclose()
