"""One service instance: its stores, agents and run manager, wired from settings or by hand.

Files under ``data_dir`` by default: ``serve.db`` (runs and their events), ``keys.db`` (API
keys, hashed), ``serve-checkpoints.db`` (graph checkpoints and the effect journal), plus the
memory and trace files the rest of the stack uses. With ``[shared] dsn`` set, all of these live
in that PostgreSQL database instead (``keel.serve.postgres``), so several processes behind one
address share every run, event, key and checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from keel.errors import AuthError
from keel.observe.records import SpanRecord, TraceSummary
from keel.serve.agents import AgentRegistry, ServedAgent, agents_from_settings
from keel.serve.base import EventLog, KeyStore, RunRegistry
from keel.serve.memory import TenantMemory
from keel.serve.runs import RunManager
from keel.serve.tenancy import TenantBudgets

if TYPE_CHECKING:
    from keel.config import KeelSettings
    from keel.graph.checkpoint.base import Checkpointer
    from keel.memory.base import Embedder, VectorStore

__all__ = ["DEFAULT_TENANT", "Service", "TraceReader", "keys_path", "open_key_store"]

DEFAULT_TENANT = "default"
"""The tenant of every request when authentication is off."""


class TraceReader(Protocol):
    """What the service reads from a trace store (any of ``keel.observe``'s stores)."""

    def trace(self, trace_id: str) -> list[SpanRecord]: ...

    def summary(self, trace_id: str) -> TraceSummary: ...


def keys_path(data_dir: Path) -> Path:
    return data_dir / "keys.db"


def open_key_store(settings: KeelSettings) -> KeyStore:
    """The configured key store: PostgreSQL with ``[shared] dsn``, else ``DATA_DIR/keys.db``."""
    dsn = settings.shared.resolve_dsn()
    if dsn:
        from keel.serve.postgres import PostgresKeyStore

        return PostgresKeyStore(dsn, schema=settings.shared.pg_schema)
    from keel.serve.sqlite import SqliteKeyStore

    return SqliteKeyStore(keys_path(settings.data_dir))


@dataclass
class Service:
    """Everything a running ``keel serve`` holds."""

    agents: AgentRegistry
    registry: RunRegistry
    events: EventLog
    keys: KeyStore
    checkpointer: Checkpointer
    memory: TenantMemory
    traces: TraceReader | None = None
    auth: bool = True
    max_body_bytes: int = 1_000_000
    keepalive_s: float = 15.0
    lease_s: float | None = None
    """Set when the stores are shared by several processes: how long a run's lease lasts."""
    where: str = "memory"
    """Where the state is, for messages (never a password)."""
    budgets: TenantBudgets | None = None
    """The budgets every run executes under (None: runs are not metered)."""
    runs: RunManager = field(init=False)

    def __post_init__(self) -> None:
        self.runs = RunManager(
            self.agents,
            self.registry,
            self.events,
            self.checkpointer,
            lease_s=self.lease_s,
            budgets=self.budgets,
        )

    @classmethod
    def from_settings(
        cls,
        settings: KeelSettings,
        *,
        agents: Sequence[ServedAgent] = (),
        memory: TenantMemory | None = None,
        tracing: bool = True,
    ) -> Service:
        """The embedded service: SQLite stores under ``settings.data_dir`` (PostgreSQL ones with
        ``[shared] dsn``), the configured agents (plus ``agents`` given here), memory opened on
        first use, the configured trace store."""
        data = settings.data_dir
        if memory is None:

            def open_memory() -> tuple[Embedder, VectorStore]:
                from keel.stack import open_memory as open_stack_memory

                opened = open_stack_memory(settings)
                return opened.embedder, opened.store

            memory = TenantMemory(
                open_memory,
                chunk_chars=settings.memory.chunk_chars,
                chunk_overlap=settings.memory.chunk_overlap,
            )
        registry = agents_from_settings(settings, memory)
        for agent in agents:
            registry.add(agent)
        traces = None
        if tracing:
            from keel.stack import open_tracing

            traces = open_tracing(settings)
        dsn = settings.shared.resolve_dsn()
        runs: RunRegistry
        events: EventLog
        checkpointer: Checkpointer
        if dsn:
            from keel.graph.checkpoint.postgres import PostgresCheckpointer
            from keel.serve.postgres import PostgresEventLog, PostgresRunRegistry

            schema = settings.shared.pg_schema
            runs = PostgresRunRegistry(dsn, schema=schema)
            where = f"{runs.where} (schema {schema}, shared)"
            events = PostgresEventLog(dsn, schema=schema)
            checkpointer = PostgresCheckpointer(dsn, schema=schema)
        else:
            from keel.graph.checkpoint.sqlite import SqliteCheckpointer
            from keel.serve.sqlite import SqliteEventLog, SqliteRunRegistry

            runs = SqliteRunRegistry(data / "serve.db")
            where = str(data)
            events = SqliteEventLog(data / "serve.db")
            checkpointer = SqliteCheckpointer(data / "serve-checkpoints.db")
        return cls(
            agents=registry,
            registry=runs,
            events=events,
            keys=open_key_store(settings),
            checkpointer=checkpointer,
            memory=memory,
            traces=traces,
            auth=settings.serve.auth,
            max_body_bytes=settings.serve.max_body_bytes,
            keepalive_s=settings.serve.keepalive_s,
            lease_s=settings.serve.lease_s if dsn else None,
            where=where,
            budgets=TenantBudgets.from_settings(settings),
        )

    async def authenticate(self, secret: str | None) -> str:
        """The tenant of an API key; ``AuthError`` when it is missing, unknown or revoked."""
        if not self.auth:
            return DEFAULT_TENANT
        if not secret:
            raise AuthError("missing API key", hint="send the header Authorization: Bearer KEY")
        key = await self.keys.verify(secret)
        if key is None:
            raise AuthError("unknown or revoked API key")
        return key.tenant

    async def start(self) -> None:
        """Listen for other processes' changes and resume the runs that were running when the
        service last stopped (or whose process's lease lapsed)."""
        await self.events.listen(self.runs.notify)
        await self.runs.begin()

    async def stop(self) -> None:
        """Stop run tasks (they resume at the next start) and close the stores."""
        await self.runs.close()
        await self.memory.close()
        await self.checkpointer.aclose()
        await self.registry.aclose()
        await self.events.aclose()
        await self.keys.aclose()
        if self.budgets is not None:
            await self.budgets.aclose()
