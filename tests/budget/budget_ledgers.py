"""Open a budget ledger from a picklable spec (used by tests and by worker processes)."""

from __future__ import annotations

from keel.budget.base import BudgetLedger

LedgerSpec = tuple[str, str]
"""(backend, where): a SQLite path, a PostgreSQL conninfo or a Redis port and key prefix."""


def open_spec(spec: LedgerSpec) -> BudgetLedger:
    """A new ledger object on the store ``spec`` names (also used in worker processes)."""
    backend, where = spec
    if backend == "sqlite":
        from keel.budget.sqlite import SqliteBudgetLedger

        return SqliteBudgetLedger(where)
    if backend == "postgres":
        from keel.budget.postgres import PostgresBudgetLedger

        conninfo, _, schema = where.rpartition("|")
        return PostgresBudgetLedger(conninfo, schema=schema)
    import redis.asyncio

    from keel.budget.redis import RedisBudgetLedger

    port, _, prefix = where.partition("|")
    return RedisBudgetLedger(redis.asyncio.Redis(port=int(port)), prefix=prefix, close_client=True)
