"""The service's storage seams: the run registry, the API key store and the event log.

Each is a small ABC with a SQLite implementation (``keel.serve.sqlite``); a PostgreSQL or Redis
backend for several ``keel serve`` processes implements the same methods. Every read of tenant
data takes the tenant and filters on it in the store itself, so a route that forgets a check
still cannot see another tenant's rows.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from keel.errors import ServeError

__all__ = [
    "TERMINAL",
    "ApiKey",
    "EventLog",
    "KeyStore",
    "RunRecord",
    "RunRegistry",
    "RunStatus",
    "StoredEvent",
    "check_tenant",
]

RunStatus = Literal["running", "interrupted", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
"""Statuses a run never leaves."""

_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant(tenant: str) -> str:
    """A tenant name: 1-63 lowercase letters, digits, '-' or '_' (it prefixes namespaces)."""
    if not _TENANT.fullmatch(tenant):
        raise ServeError(
            f"invalid tenant name {tenant!r}",
            hint="use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
        )
    return tenant


class RunRecord(BaseModel):
    """One run of an agent as the service tracks it (the graph state lives in checkpoints)."""

    id: str
    tenant: str
    agent: str
    status: RunStatus = "running"
    input: Any = None
    output: str | None = None
    error: str | None = None
    interrupts: list[dict[str, Any]] = Field(default_factory=list)
    """Pending interrupts: ``{"id", "node", "value"}``."""
    answers: dict[str, Any] = Field(default_factory=dict)
    """Answers given so far to the pending interrupts, by interrupt id."""
    trace_ids: list[str] = Field(default_factory=list)
    created_at: float
    updated_at: float


class RunRegistry(ABC):
    """Where runs are recorded, by tenant."""

    @abstractmethod
    async def create(self, record: RunRecord) -> None:
        """Record a new run (its id is unique)."""

    @abstractmethod
    async def get(self, tenant: str, run_id: str) -> RunRecord | None:
        """The run if it exists *and belongs to* ``tenant``, else None."""

    @abstractmethod
    async def update(self, run_id: str, **fields: Any) -> RunRecord:
        """Change fields of a run (status, output, error, interrupts, answers, trace_ids)."""

    @abstractmethod
    async def list_runs(
        self,
        tenant: str,
        *,
        agent: str | None = None,
        status: str | None = None,
        limit: int = 20,
    ) -> list[RunRecord]:
        """The tenant's runs, newest first, optionally of one agent and/or status."""

    @abstractmethod
    async def unfinished(self) -> list[RunRecord]:
        """Runs of every tenant whose status is ``running`` (to resume after a restart)."""

    @abstractmethod
    async def trace_ids(self, tenant: str, limit: int = 20) -> list[str]:
        """Trace ids recorded by the tenant's runs, newest run first."""

    @abstractmethod
    async def has_trace(self, tenant: str, trace_id: str) -> bool:
        """Whether one of the tenant's runs recorded this trace."""

    # -- several processes: a store shared by them overrides these single-process defaults --

    async def modify(
        self,
        tenant: str,
        run_id: str,
        change: Callable[[RunRecord], dict[str, Any]],
        *,
        lease: tuple[str, float] | None = None,
    ) -> RunRecord | None:
        """Apply ``change`` (the fields to set, from the current record) atomically; None when
        the tenant has no such run. When the change sets the status ``running``, the lease
        ``(owner, ttl)`` is taken in the same write. One process: nothing runs between the read
        and the write, and there are no leases."""
        record = await self.get(tenant, run_id)
        if record is None:
            return None
        fields = change(record)
        return await self.update(run_id, **fields) if fields else record

    async def claimable(self) -> list[RunRecord]:
        """Running runs no live process drives (one process: all of them, at start)."""
        return await self.unfinished()

    async def claim(self, run_id: str, owner: str, ttl: float) -> bool:
        """Take the run's lease for ``ttl`` seconds unless another owner holds a live one."""
        return True

    async def renew(self, owner: str, run_ids: list[str], ttl: float) -> list[str]:
        """Extend ``owner``'s leases; returns the runs whose lease it still holds."""
        return run_ids

    async def release(self, run_id: str, owner: str) -> None:  # noqa: B027 - optional hook
        """Give up the run's lease (its task ended or the process stops)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class ApiKey(BaseModel):
    """An API key as listed: never the secret, only its public id."""

    id: str
    tenant: str
    name: str = ""
    created_at: float
    revoked_at: float | None = None


class KeyStore(ABC):
    """API keys, stored hashed; each belongs to one tenant."""

    @abstractmethod
    async def create(self, tenant: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key: its record and the secret, which is never stored or shown again."""

    @abstractmethod
    async def verify(self, secret: str) -> ApiKey | None:
        """The key a secret belongs to, if it exists and is not revoked (constant-time)."""

    @abstractmethod
    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Keys (of one tenant, or all), oldest first."""

    @abstractmethod
    async def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such key."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class StoredEvent(BaseModel):
    """One event of a run, numbered from 1 in the order it happened."""

    seq: int
    kind: str
    step: int
    node: str | None = None
    data: Any = None
    path: list[str] = Field(default_factory=list)
    time: float


class EventLog(ABC):
    """The events of every run, so a client can (re)attach and replay from any point."""

    @abstractmethod
    async def append(self, run_id: str, event: StoredEvent) -> StoredEvent:
        """Store an event (its ``seq`` is assigned here) and return it."""

    @abstractmethod
    async def read(self, run_id: str, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events with ``seq > after``, in order."""

    async def listen(self, callback: Callable[[str], None]) -> None:  # noqa: B027
        """Call ``callback(run_id)`` when another process changes a run (a shared store)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
