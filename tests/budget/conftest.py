"""Ledger factories for the budget tests: a SQLite file, a real PostgreSQL and a real Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from budget_ledgers import LedgerSpec, open_spec

from keel.budget.base import BudgetLedger
from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """A throwaway redis-server on a loopback port, for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian package redis-server; see Makefile)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


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
