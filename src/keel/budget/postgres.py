"""``PostgresBudgetLedger``: budget counters in PostgreSQL, shared by processes and machines.

Install with ``pip install 'keel[postgres]'``. A reservation is one transaction that first takes
a transaction-scoped advisory lock per budget key (in sorted order, so two reservations never
deadlock), then reads the counters, checks them and inserts the reservation: two processes can
never both see room for the last unit of a budget. One connection per ledger, opened on first
use; the tables (and the reserve function) are created idempotently in ``schema``. A
reservation is one call of a PL/pgSQL function and a settlement one statement, so each costs
one round trip to the server.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from keel.budget.base import (
    COUNTERS,
    Budget,
    BudgetLedger,
    Limits,
    Reservation,
    ScopeSpend,
    Spend,
    budget_exceeded,
    day_filter,
)
from keel.errors import MissingDependencyError, StoreError

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "psycopg", "postgres", feature="The PostgreSQL budget ledger"
    ) from e

__all__ = ["PostgresBudgetLedger"]

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_COLS = ", ".join(COUNTERS)
_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {{schema}};
CREATE TABLE IF NOT EXISTS {{schema}}.budget_usage (
    key TEXT PRIMARY KEY,
    {", ".join(f"{c} DOUBLE PRECISION NOT NULL DEFAULT 0" for c in COUNTERS)},
    limits TEXT,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {{schema}}.budget_reservations (
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    {", ".join(f"{c} DOUBLE PRECISION NOT NULL" for c in COUNTERS)},
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (id, key)
);
CREATE INDEX IF NOT EXISTS budget_reservations_key
    ON {{schema}}.budget_reservations (key, expires_at);
CREATE OR REPLACE FUNCTION {{schema}}.keel_budget_reserve(
    p_id TEXT, p_keys TEXT[], p_limits DOUBLE PRECISION[], p_json TEXT[],
    p_amount DOUBLE PRECISION[], p_now DOUBLE PRECISION, p_ttl DOUBLE PRECISION
) RETURNS DOUBLE PRECISION[] LANGUAGE plpgsql AS $fn$
DECLARE
    n INT := array_length(p_keys, 1);
    taken DOUBLE PRECISION[] := ARRAY[]::DOUBLE PRECISION[];
    u DOUBLE PRECISION[];
    h DOUBLE PRECISION[];
    x DOUBLE PRECISION;
    lim DOUBLE PRECISION;
BEGIN
    -- Locks in sorted order (no deadlocks); each later statement sees what they protect.
    PERFORM pg_advisory_xact_lock(hashtext('keel-budget:' || k))
        FROM (SELECT DISTINCT unnest(p_keys) AS k ORDER BY 1) AS s;
    FOR b IN 1..n LOOP
        SELECT ARRAY[{_COLS}] INTO u FROM {{schema}}.budget_usage WHERE key = p_keys[b];
        IF u IS NULL THEN
            u := array_fill(0::DOUBLE PRECISION, ARRAY[{len(COUNTERS)}]);
        END IF;
        SELECT ARRAY[{", ".join(f"COALESCE(SUM({c}), 0)" for c in COUNTERS)}] INTO h
            FROM {{schema}}.budget_reservations WHERE key = p_keys[b] AND expires_at > p_now;
        FOR c IN 1..{len(COUNTERS)} LOOP
            x := u[c] + h[c];
            taken := taken || x;
            lim := p_limits[(b - 1) * {len(COUNTERS)} + c];
            IF lim IS NOT NULL AND x + p_amount[c] > lim + 1e-9 THEN
                RETURN ARRAY[0, b, c, x];
            END IF;
        END LOOP;
    END LOOP;
    INSERT INTO {{schema}}.budget_usage (key, limits, updated_at)
        SELECT DISTINCT ON (k) k, j, p_now FROM unnest(p_keys, p_json) AS t(k, j)
        ON CONFLICT (key) DO UPDATE SET limits = excluded.limits,
            updated_at = excluded.updated_at;
    INSERT INTO {{schema}}.budget_reservations (id, key, {_COLS}, expires_at)
        SELECT p_id, k, {", ".join(f"p_amount[{i + 1}]" for i in range(len(COUNTERS)))},
            p_now + p_ttl
        FROM (SELECT DISTINCT unnest(p_keys) AS k) AS s;
    RETURN ARRAY[1, p_now + p_ttl] || taken;
END
$fn$;
"""

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


class PostgresBudgetLedger(BudgetLedger):
    """Budget counters in tables of ``schema``; ``conninfo`` is a libpq string or URL."""

    def __init__(self, conninfo: str, *, schema: str = "keel", connect_timeout: float = 10) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must be a lowercase SQL identifier, got {schema!r}")
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error:
            raise StoreError(
                "invalid PostgreSQL connection string: use 'key=value' pairs or a postgresql:// URL"
            ) from None
        self._conninfo = conninfo
        self._password = str(params.get("password") or "")
        host = params.get("host") or "localhost"
        self.where = f"postgresql://{host}:{params.get('port') or 5432}/{params.get('dbname', '')}"
        self.schema = schema
        self.connect_timeout = connect_timeout
        self._conn: Conn | None = None
        self._lock = asyncio.Lock()
        s = sql.Identifier(schema)
        self._usage = sql.SQL("{}.budget_usage").format(s)
        self._held = sql.SQL("{}.budget_reservations").format(s)

    def __repr__(self) -> str:
        return f"PostgresBudgetLedger({self.where!r}, schema={self.schema!r})"

    def _error(self, action: str, e: BaseException) -> StoreError:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        return StoreError(f"cannot {action} in the budget ledger {self.where}: {detail}")

    async def _connect(self) -> Conn:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name="keel-budget",
            )
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"keel:{self.schema}",)
                )
                await conn.execute(sql.SQL(_DDL).format(schema=sql.Identifier(self.schema)))
        except psycopg.Error as e:
            raise self._error("connect", e) from None
        self._conn = conn
        return conn

    async def reserve(
        self,
        budgets: Sequence[Budget],
        amount: Spend,
        *,
        ttl: float = 300.0,
        now: datetime | None = None,
    ) -> Reservation:
        rid = Reservation.new_id()
        keys = [b.scope.key(now) for b in budgets]
        bounds: list[float | None] = []
        for budget in budgets:
            limited = dict(budget.limits.items())
            bounds.extend(limited.get(c) for c in COUNTERS)
        limits = [b.limits.model_dump_json(exclude_none=True) for b in budgets]
        stamp = time.time()
        async with self._lock:
            conn = await self._connect()
            try:
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT {}.keel_budget_reserve(%s, %s, %s::float8[], %s, "
                        "%s::float8[], %s, %s)"
                    ).format(sql.Identifier(self.schema)),
                    (rid, keys, bounds, limits, list(amount.values()), stamp, float(ttl)),
                )
                row = await cur.fetchone()
            except psycopg.Error as e:
                raise self._error("reserve", e) from e
        assert row is not None
        out = [float(v) for v in row[0]]
        if out[0] == 0:
            b, c = int(out[1]) - 1, int(out[2]) - 1
            counter = COUNTERS[c]
            bound = dict(budgets[b].limits.items())[counter]
            raise budget_exceeded(keys[b], counter, out[3], bound, amount.values()[c])
        n = len(COUNTERS)
        remaining: dict[str, dict[str, float]] = {}
        for b, budget in enumerate(budgets):
            taken = out[2 + b * n : 2 + (b + 1) * n]
            remaining[keys[b]] = {
                c: bound - taken[COUNTERS.index(c)] - getattr(amount, c)
                for c, bound in budget.limits.items()
            }
        return Reservation(rid, tuple(keys), amount, stamp + ttl, remaining)

    async def _counters(
        self, conn: Conn, keys: Sequence[str], stamp: float
    ) -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
        """Used and reserved counters of ``keys``, in one query."""
        used = ", ".join(f"COALESCE(u.{c}, 0)" for c in COUNTERS)
        held = ", ".join(f"COALESCE(h.{c}, 0)" for c in COUNTERS)
        sums = ", ".join(f"SUM({c}) AS {c}" for c in COUNTERS)
        cur = await conn.execute(
            sql.SQL(
                f"SELECT k, {used}, {held} FROM unnest(%s::text[]) AS k "
                "LEFT JOIN {usage} AS u ON u.key = k "
                f"LEFT JOIN (SELECT key, {sums} FROM {{held}} "
                "WHERE key = ANY(%s) AND expires_at > %s GROUP BY key) AS h ON h.key = k"
            ).format(usage=self._usage, held=self._held),
            (list(keys), list(keys), stamp),
        )
        n = len(COUNTERS)
        out: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        for row in await cur.fetchall():
            values = [float(v) for v in row[1:]]
            out[row[0]] = (tuple(values[:n]), tuple(values[n:]))
        return out

    async def settle(self, reservation: Reservation, actual: Spend) -> None:
        values = actual.values()
        add = ", ".join(f"{c} = {{usage}}.{c} + excluded.{c}" for c in COUNTERS)
        marks = ", ".join("%s" for _ in COUNTERS)
        async with self._lock:
            conn = await self._connect()
            try:
                stamp = time.time()
                # One statement (so one atomic transaction): drop the reservation (and any
                # expired ones), add the actual amount.
                await conn.execute(
                    sql.SQL(
                        "WITH gone AS (DELETE FROM {held} WHERE id = %s OR expires_at <= %s) "
                        f"INSERT INTO {{usage}} (key, {_COLS}, updated_at) "
                        f"SELECT k, {marks}, %s FROM unnest(%s::text[]) AS k "
                        f"ON CONFLICT (key) DO UPDATE SET {add}, "
                        "updated_at = excluded.updated_at"
                    ).format(usage=self._usage, held=self._held),
                    (reservation.id, stamp, *values, stamp, sorted(set(reservation.keys))),
                )
            except psycopg.Error as e:
                raise self._error("settle", e) from e

    async def spend(self, keys: Sequence[str]) -> list[ScopeSpend]:
        out: list[ScopeSpend] = []
        async with self._lock:
            conn = await self._connect()
            try:
                stamp = time.time()
                counters = await self._counters(conn, keys, stamp)
                cur = await conn.execute(
                    sql.SQL("SELECT key, limits FROM {} WHERE key = ANY(%s)").format(self._usage),
                    (list(keys),),
                )
                stored = {k: v for k, v in await cur.fetchall()}
                for key in keys:
                    used, reserved = counters[key]
                    raw = stored.get(key)
                    limits = Limits.model_validate(json.loads(raw)) if raw else None
                    out.append(ScopeSpend(key, Spend.of(used), Spend.of(reserved), limits))
            except psycopg.Error as e:
                raise self._error("read", e) from e
        return out

    async def scopes(self, *, day: str | date | None = None) -> list[str]:
        async with self._lock:
            conn = await self._connect()
            try:
                cur = await conn.execute(sql.SQL("SELECT key FROM {}").format(self._usage))
                rows = await cur.fetchall()
            except psycopg.Error as e:
                raise self._error("list scopes", e) from e
        return day_filter([r[0] for r in rows], day)

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
