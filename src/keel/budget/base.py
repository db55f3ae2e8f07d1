"""Budgets as data, and the ``BudgetLedger`` protocol that keeps their counters.

A ``Budget`` is a ``BudgetScope`` (a run, a session, a tenant, an agent or everything, either for
all time or per UTC day) with ``Limits`` on seven counters. Before a call, the worst case is
*reserved* against every budget that applies, atomically: either all of them can take it, or
none is touched and ``BudgetExceeded`` names the first one that cannot. After the call the
actual amount is *settled* and the unused part of the reservation goes back. A reservation that
is never settled (the process died) stops counting after its ``ttl``.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.errors import BudgetExceeded

__all__ = [
    "COUNTERS",
    "Budget",
    "BudgetLedger",
    "BudgetScope",
    "Limits",
    "Reservation",
    "ScopeSpend",
    "Spend",
    "check",
    "utc_day",
]

COUNTERS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "model_calls",
    "tool_calls",
    "wall_time_s",
)
"""Every counter a budget can limit, in the order the ledgers store them."""

ScopeKind = Literal["run", "session", "tenant", "agent", "global"]


def utc_day(now: datetime | None = None) -> str:
    """The UTC date (``YYYY-MM-DD``) day budgets are counted under; they roll over at midnight."""
    return (now or datetime.now(UTC)).astimezone(UTC).date().isoformat()


class Spend(BaseModel):
    """An amount of each counter: a reservation, a settlement, or what a scope has used."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_tokens: float = Field(0, ge=0)
    output_tokens: float = Field(0, ge=0)
    total_tokens: float = Field(0, ge=0)
    cost_usd: float = Field(0, ge=0)
    model_calls: float = Field(0, ge=0)
    tool_calls: float = Field(0, ge=0)
    wall_time_s: float = Field(0, ge=0)

    def values(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, c)) for c in COUNTERS)

    @classmethod
    def of(cls, values: Sequence[float]) -> Spend:
        return cls(**{c: max(0.0, float(v)) for c, v in zip(COUNTERS, values, strict=True)})

    def __add__(self, other: Spend) -> Spend:
        return Spend.of([a + b for a, b in zip(self.values(), other.values(), strict=True)])

    def nonzero(self) -> dict[str, float]:
        return {c: v for c, v in zip(COUNTERS, self.values(), strict=True) if v}


class Limits(BaseModel):
    """Upper bounds per counter; ``None`` means unlimited. Costs are US dollars."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_tokens: int | None = Field(None, ge=0)
    output_tokens: int | None = Field(None, ge=0)
    total_tokens: int | None = Field(None, ge=0)
    cost_usd: float | None = Field(None, ge=0)
    model_calls: int | None = Field(None, ge=0)
    tool_calls: int | None = Field(None, ge=0)
    wall_time_s: float | None = Field(None, gt=0)

    def items(self) -> list[tuple[str, float]]:
        """The limited counters and their bounds."""
        return [(c, float(v)) for c in COUNTERS if (v := getattr(self, c)) is not None]


class BudgetScope(BaseModel):
    """What a budget counts: one run, session, tenant or agent, or everything (``global``);
    ``daily`` budgets count one UTC day at a time and start from zero at midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ScopeKind
    id: str = Field("", max_length=200)
    daily: bool = False

    @classmethod
    def run(cls, run_id: str) -> BudgetScope:
        return cls(kind="run", id=run_id)

    @classmethod
    def session(cls, session_id: str, *, daily: bool = False) -> BudgetScope:
        return cls(kind="session", id=session_id, daily=daily)

    @classmethod
    def tenant(cls, tenant: str, *, daily: bool = True) -> BudgetScope:
        return cls(kind="tenant", id=tenant, daily=daily)

    @classmethod
    def agent(cls, name: str, *, daily: bool = True) -> BudgetScope:
        return cls(kind="agent", id=name, daily=daily)

    @classmethod
    def day(cls) -> BudgetScope:
        """Everything, per UTC day."""
        return cls(kind="global", daily=True)

    @property
    def subject(self) -> str:
        """The scope without its day: ``tenant:acme`` (what spend alerts watch)."""
        return f"{self.kind}:{self.id}" if self.id else self.kind

    def key(self, now: datetime | None = None) -> str:
        """The ledger key: ``run:r1``, ``tenant:acme@2026-11-24``."""
        return f"{self.subject}@{utc_day(now)}" if self.daily else self.subject


class Budget(BaseModel):
    """Limits on one scope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: BudgetScope
    limits: Limits


@dataclass(frozen=True)
class Reservation:
    """A reservation held in a ledger until settled (or until ``expires_at``, epoch seconds)."""

    id: str
    keys: tuple[str, ...]
    amount: Spend
    expires_at: float
    remaining: dict[str, dict[str, float]]
    """Per key, what each limited counter has left after this reservation."""

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex


@dataclass(frozen=True)
class ScopeSpend:
    """A scope's counters in the ledger: settled use, open reservations, last limits seen."""

    key: str
    used: Spend
    reserved: Spend
    limits: Limits | None


def check(
    key: str, limits: Limits, used: Sequence[float], reserved: Sequence[float], amount: Spend
) -> dict[str, float]:
    """Raise ``BudgetExceeded`` if ``amount`` does not fit ``limits`` at ``key``; else return
    what each limited counter has left once it is reserved. Backends call this inside their
    atomic section (SQL transaction); the Redis Lua script does the same arithmetic."""
    left: dict[str, float] = {}
    for counter, bound in limits.items():
        i = COUNTERS.index(counter)
        taken = used[i] + reserved[i]
        want = getattr(amount, counter)
        if taken + want > bound + 1e-9:
            raise budget_exceeded(key, counter, taken, bound, want)
        left[counter] = bound - taken - want
    return left


def budget_exceeded(
    key: str, counter: str, taken: float, bound: float, want: float
) -> BudgetExceeded:
    unit = " USD" if counter == "cost_usd" else (" s" if counter == "wall_time_s" else "")
    return BudgetExceeded(
        f"budget {key} is out of {counter}: {taken:g}{unit} used or reserved of {bound:g}{unit}, "
        f"the next call needs {want:g}{unit}",
        scope=key,
        limit=counter,
        used=taken,
        maximum=bound,
        requested=want,
        hint="raise the limit, or resume the run with a larger budget",
    )


class BudgetLedger(ABC):
    """Counters per scope key, shared by every process that opens the same store.

    ``reserve`` is atomic across all ``budgets``: all are charged or none. ``settle`` replaces a
    reservation by the actual amount (call it once per reservation). ``now`` is for tests.
    """

    @abstractmethod
    async def reserve(
        self,
        budgets: Sequence[Budget],
        amount: Spend,
        *,
        ttl: float = 300.0,
        now: datetime | None = None,
    ) -> Reservation:
        """Hold ``amount`` on every budget's key, or raise ``BudgetExceeded`` holding nothing."""

    @abstractmethod
    async def settle(self, reservation: Reservation, actual: Spend) -> None:
        """Drop ``reservation`` and add ``actual`` to the used counters of its keys."""

    @abstractmethod
    async def spend(self, keys: Sequence[str]) -> list[ScopeSpend]:
        """The counters of ``keys`` (zero for a key never used), in the same order."""

    @abstractmethod
    async def scopes(self, *, day: str | date | None = None) -> list[str]:
        """Keys the ledger holds: all of them, or the day ones of ``day`` plus the undated."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def day_filter(keys: Sequence[str], day: str | date | None) -> list[str]:
    """``keys`` limited to those of ``day`` (and those without a day), sorted."""
    if day is None:
        return sorted(keys)
    d = day if isinstance(day, str) else day.isoformat()
    return sorted(k for k in keys if "@" not in k or k.endswith("@" + d))
