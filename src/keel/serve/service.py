"""One service instance: its stores, agents and run manager, wired from settings or by hand.

Files under ``data_dir`` by default: ``serve.db`` (runs and their events), ``keys.db`` (API
keys, hashed), ``serve-checkpoints.db`` (graph checkpoints and the effect journal), plus the
memory and trace files the rest of the stack uses.
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

if TYPE_CHECKING:
    from keel.config import KeelSettings
    from keel.graph.checkpoint.base import Checkpointer
    from keel.memory.base import Embedder, VectorStore

__all__ = ["DEFAULT_TENANT", "Service", "TraceReader", "keys_path"]

DEFAULT_TENANT = "default"
"""The tenant of every request when authentication is off."""


class TraceReader(Protocol):
    """What the service reads from a trace store (any of ``keel.observe``'s stores)."""

    def trace(self, trace_id: str) -> list[SpanRecord]: ...

    def summary(self, trace_id: str) -> TraceSummary: ...


def keys_path(data_dir: Path) -> Path:
    return data_dir / "keys.db"


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
    runs: RunManager = field(init=False)

    def __post_init__(self) -> None:
        self.runs = RunManager(self.agents, self.registry, self.events, self.checkpointer)

    @classmethod
    def from_settings(
        cls,
        settings: KeelSettings,
        *,
        agents: Sequence[ServedAgent] = (),
        memory: TenantMemory | None = None,
        tracing: bool = True,
    ) -> Service:
        """The embedded service: SQLite stores under ``settings.data_dir``, the configured
        agents (plus ``agents`` given here), memory opened on first use, the local trace store."""
        from keel.graph.checkpoint.sqlite import SqliteCheckpointer
        from keel.serve.sqlite import SqliteEventLog, SqliteKeyStore, SqliteRunRegistry

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
        return cls(
            agents=registry,
            registry=SqliteRunRegistry(data / "serve.db"),
            events=SqliteEventLog(data / "serve.db"),
            keys=SqliteKeyStore(keys_path(data)),
            checkpointer=SqliteCheckpointer(data / "serve-checkpoints.db"),
            memory=memory,
            traces=traces,
            auth=settings.serve.auth,
            max_body_bytes=settings.serve.max_body_bytes,
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
        """Resume the runs that were running when the service last stopped."""
        await self.runs.resume_unfinished()

    async def stop(self) -> None:
        """Stop run tasks (they resume at the next start) and close the stores."""
        await self.runs.close()
        await self.memory.close()
        await self.checkpointer.aclose()
        await self.registry.aclose()
        await self.events.aclose()
        await self.keys.aclose()
