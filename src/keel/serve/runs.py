"""Runs as asyncio tasks on the graph engine: start, record events, answer, cancel, resume.

Every run is compiled with the service's durable checkpointer, so its state after each step is
saved. When the service stops (SIGTERM) its tasks are cancelled but their registry status stays
``running``; the next start finds those runs and resumes them from their last checkpoint, and the
graph's effect journal keeps side effects that already happened from happening again.

With a store shared by several processes (``lease_s`` set), a run is driven by the one process
holding its lease; the holder renews it every ``lease_s / 3`` seconds, and every process sweeps
as often for running runs whose lease has lapsed (their process died) and resumes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from typing import Any

import pydantic_core
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel

from keel.errors import BudgetExceeded, GraphError, ServeError
from keel.graph.checkpoint.base import Checkpointer
from keel.graph.engine import CompiledGraph, RunResult
from keel.graph.runtime import Event, Interrupt
from keel.serve.agents import AgentRegistry, ServedAgent
from keel.serve.base import TERMINAL, EventLog, RunRecord, RunRegistry, StoredEvent
from keel.serve.tenancy import TenantBudgets, current_tenant

__all__ = ["BUDGET_EXCEEDED", "RunConflictError", "RunManager"]

BUDGET_EXCEEDED = "budget_exceeded"
"""The error type of a run stopped by its budget (its ``error`` starts with it)."""

_log = logging.getLogger("keel.serve")
_tracer = trace.get_tracer("keel.serve")
TENANT_ATTRIBUTE = "keel.tenant"
RUN_ATTRIBUTE = "keel.serve.run_id"
_MISSING: Any = object()


class RunConflictError(ServeError):
    """The run is not in a state that allows this (e.g. cancelling a finished run)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return pydantic_core.to_jsonable_python(value, fallback=repr)


def public_id(key: str) -> str:
    """The URL-safe id under which the API shows an interrupt (engine keys hold '/' and '#')."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _interrupt(i: Interrupt) -> dict[str, Any]:
    return {"id": public_id(i.id), "key": i.id, "node": i.node, "value": _jsonable(i.value)}


def _stored(event: Event) -> StoredEvent:
    data = event.data
    if event.kind == "run_finished" and isinstance(data, RunResult):
        data = {
            "status": data.status,
            "steps": data.steps,
            "path": list(data.path),
            "interrupts": [_interrupt(i) for i in data.interrupts],
        }
    elif isinstance(data, Interrupt):
        data = _interrupt(data)
    else:
        data = _jsonable(data)
    return StoredEvent(
        seq=0,
        kind=event.kind,
        step=event.step,
        node=event.node,
        data=data,
        path=list(event.path),
        time=time.time(),
    )


class RunManager:
    """Starts and tracks the runs of one service process."""

    def __init__(
        self,
        agents: AgentRegistry,
        registry: RunRegistry,
        events: EventLog,
        checkpointer: Checkpointer,
        *,
        lease_s: float | None = None,
        budgets: TenantBudgets | None = None,
    ) -> None:
        self.agents = agents
        self.budgets = budgets
        self.lease_s = lease_s
        self.owner = uuid.uuid4().hex
        self._sweeper: asyncio.Task[None] | None = None
        self._dropped: set[str] = set()
        self._settling: set[str] = set()
        self.registry = registry
        self.events = events
        self.checkpointer = checkpointer
        self._compiled: dict[tuple[str, str], CompiledGraph[Any]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._signals: dict[str, asyncio.Event] = {}
        self.closing = False

    # -- graphs ----------------------------------------------------------------------------

    def compiled(self, agent: ServedAgent, tenant: str) -> CompiledGraph[Any]:
        key = (agent.name, tenant if agent.per_tenant() else "")
        graph = self._compiled.get(key)
        if graph is None:
            graph = agent.graph(tenant).compile(checkpointer=self.checkpointer)
            self._compiled[key] = graph
        return graph

    # -- notifications for event streams ----------------------------------------------------

    def signal(self, run_id: str) -> asyncio.Event:
        """An event set at the next change of the run (a new event or a new status)."""
        return self._signals.setdefault(run_id, asyncio.Event())

    def notify(self, run_id: str) -> None:
        """Wake the streams of a run (called on changes announced by other processes)."""
        self._notify(run_id)

    def _notify(self, run_id: str) -> None:
        signal = self._signals.pop(run_id, None)
        if signal is not None:
            signal.set()

    async def _append(self, run_id: str, event: StoredEvent) -> None:
        await self.events.append(run_id, event)
        self._notify(run_id)

    # -- public operations ------------------------------------------------------------------

    async def start(self, tenant: str, agent_name: str, value: str | dict[str, Any]) -> RunRecord:
        """Check the input, record the run and start it; returns at once."""
        return await self.start_input(tenant, agent_name, self.agents.get(agent_name).input(value))

    async def start_input(
        self, tenant: str, agent_name: str, graph_input: dict[str, Any]
    ) -> RunRecord:
        """Like ``start``, with the graph's input already built."""
        agent = self.agents.get(agent_name)
        compiled = self.compiled(agent, tenant)
        try:
            compiled.schema.create(graph_input)
        except GraphError as e:
            raise ServeError(f"invalid input for agent {agent_name!r}: {e.message}") from None
        now = time.time()
        record = RunRecord(
            id=uuid.uuid4().hex,
            tenant=tenant,
            agent=agent_name,
            input=_jsonable(graph_input),
            created_at=now,
            updated_at=now,
        )
        await self.registry.create(record)
        if await self._claim(record.id):  # else a sweeping process took it first and drives it
            self._launch(record, resume=False)
        return record

    async def answer(self, record: RunRecord, interrupt_id: str, value: Any) -> RunRecord:
        """Answer one pending interrupt; once all are answered, the run resumes."""
        resume: list[Any] = []

        def change(current: RunRecord) -> dict[str, Any]:
            # checked on the record as locked by the store: another process may have answered
            if current.status != "interrupted":
                raise RunConflictError(
                    f"run {current.id} is {current.status}, not waiting for input"
                )
            keys = {i["id"]: i["key"] for i in current.interrupts}
            if interrupt_id not in keys:
                raise KeyError(interrupt_id)
            pending = set(keys.values())
            answers = {**current.answers, keys[interrupt_id]: value}
            if set(answers) != pending:
                return {"answers": answers}
            resume.append(answers if len(pending) > 1 else value)
            return {"status": "running", "answers": {}, "interrupts": []}

        lease = None if self.lease_s is None else (self.owner, self.lease_s)
        changed = await self.registry.modify(record.tenant, record.id, change, lease=lease)
        if changed is None:
            raise KeyError(interrupt_id)
        if resume:  # the lease was taken with the answer: this process drives the run
            self._launch(changed, resume=True, answer=resume[0])
        self._notify(changed.id)
        return changed

    async def cancel(self, record: RunRecord) -> RunRecord:
        if record.status in TERMINAL:
            raise RunConflictError(f"run {record.id} has already ended ({record.status})")
        task = self._tasks.get(record.id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            await self._finish(record.id, status="cancelled", interrupts=[], answers={})
            await self._append(
                record.id, StoredEvent(seq=0, kind="run_cancelled", step=0, time=time.time())
            )
        found = await self.registry.get(record.tenant, record.id)
        assert found is not None
        return found

    async def resume_unfinished(self) -> int:
        """Resume every run that was running when the service last stopped (or, with a shared
        store, whose process's lease lapsed); return how many."""
        count = 0
        for record in await self.registry.claimable():
            if record.id in self._tasks or not await self._claim(record.id):
                continue
            if record.id in self._dropped:
                await self._release(record.id)
                continue
            try:
                agent = self.agents.get(record.agent)
                compiled = self.compiled(agent, record.tenant)
            except Exception as e:
                await self._finish(record.id, status="failed", error=f"cannot resume: {e}")
                await self._release(record.id)
                continue
            checkpoint = await self.checkpointer.latest(record.id)
            if checkpoint is None:
                self._launch(record, resume=False)
            elif checkpoint.status == "done":
                state, _ = await compiled.get_state(record.id)
                await self._finish(record.id, status="done", output=agent.output(state))
                await self._release(record.id)
            elif checkpoint.status == "interrupted":
                extra = pydantic_core.from_json(checkpoint.extra)
                asks = [Interrupt(**i) for i in extra.get("interrupts", [])]
                await self._release(record.id)
                await self._finish(
                    record.id, status="interrupted", interrupts=[_interrupt(i) for i in asks]
                )
            else:
                self._launch(record, resume=True)
            count += 1
        if count:
            _log.info("resumed %d run(s) that were running when the service stopped", count)
        return count

    async def begin(self) -> None:
        """Resume orphaned runs; with a lease, keep renewing it and sweeping for orphans."""
        await self.resume_unfinished()
        if self.lease_s is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(self.lease_s), name="keel serve leases")

    async def _sweep(self, lease_s: float) -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                owned = list(self._tasks)
                held = (
                    set(await self.registry.renew(self.owner, owned, lease_s)) if owned else set()
                )
                for run_id in owned:
                    task = self._tasks.get(run_id)
                    if run_id not in held and run_id not in self._settling and task is not None:
                        # cancelled or taken over elsewhere: stop without writing anything
                        _log.warning("run %s is no longer this process's to drive", run_id)
                        self._dropped.add(run_id)
                        task.cancel()
                await self.resume_unfinished()
            except Exception as e:  # a store outage must not end the sweeps
                _log.warning("lease sweep failed: %s", e)

    async def _claim(self, run_id: str) -> bool:
        if self.lease_s is None:
            return True
        return await self.registry.claim(run_id, self.owner, self.lease_s)

    async def _release(self, run_id: str) -> None:
        if self.lease_s is not None:
            await self.registry.release(run_id, self.owner)

    async def close(self) -> None:
        """Stop every run task; their status stays ``running``, so the next start resumes them
        (with a shared store, their leases are released so another process resumes them)."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _log.info("stopped; %d run(s) will resume at the next start", len(tasks))
        for run_id in list(self._signals):
            self._notify(run_id)

    def active(self) -> int:
        return len(self._tasks)

    async def wait(self, run_id: str) -> None:
        """Wait until the run's task (if it has one in this process) ends."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    # -- driving a run ----------------------------------------------------------------------

    def _launch(self, record: RunRecord, *, resume: bool, answer: Any = _MISSING) -> None:
        task = asyncio.create_task(self._drive(record, resume, answer), name=f"run {record.id}")
        self._tasks[record.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(record.id, None))

    async def _finish(self, run_id: str, **fields: Any) -> None:
        await self.registry.update(run_id, **fields)
        self._notify(run_id)

    async def _settle(self, record: RunRecord, **fields: Any) -> None:
        """Record how a drive ended, unless the run was cancelled meanwhile (by any process)."""
        await self.registry.modify(
            record.tenant, record.id, lambda now: fields if now.status == "running" else {}
        )
        self._notify(record.id)

    async def _drive(self, record: RunRecord, resume: bool, answer: Any) -> None:
        current_tenant.set(record.tenant)  # this task's own context: cache namespaces
        agent = self.agents.get(record.agent)
        compiled = self.compiled(agent, record.tenant)
        # A trace of its own (not a child of the HTTP request that started it), so a tenant's
        # trace holds that run only.
        root = otel_context.Context()
        with _tracer.start_as_current_span(f"keel.serve.run {record.agent}", root) as span:
            span.set_attribute(TENANT_ATTRIBUTE, record.tenant)
            span.set_attribute(RUN_ATTRIBUTE, record.id)
            context = span.get_span_context()
            if context.is_valid:
                trace_id = format(context.trace_id, "032x")
                record = await self.registry.update(
                    record.id, trace_ids=[*record.trace_ids, trace_id]
                )
            try:
                if resume:
                    stream = compiled.stream(run_id=record.id, resume=True, answer=answer)
                else:
                    stream = compiled.stream(record.input, run_id=record.id)
                result: RunResult[Any] | None = None
                async with contextlib.AsyncExitStack() as stack:
                    if self.budgets is not None:
                        await stack.enter_async_context(
                            self.budgets.meter(record.id, record.tenant)
                        )
                    async for event in stream:
                        if event.kind == "run_finished":
                            result = event.data
                        await self._append(record.id, _stored(event))
                assert result is not None
                self._settling.add(record.id)  # its own status change: not a reason to drop it
                if result.status == "interrupted":
                    # free the run first: the answer may come to another process at once
                    await self._release(record.id)
                    await self._settle(
                        record,
                        status="interrupted",
                        interrupts=[_interrupt(i) for i in result.interrupts],
                        answers={},
                    )
                else:
                    await self._settle(record, status="done", output=agent.output(result.state))
            except asyncio.CancelledError:
                if not self.closing and record.id not in self._dropped:
                    await self._finish(record.id, status="cancelled", interrupts=[], answers={})
                    await self._append(
                        record.id,
                        StoredEvent(seq=0, kind="run_cancelled", step=0, time=time.time()),
                    )
                raise
            except Exception as e:
                self._settling.add(record.id)
                _log.warning("run %s of agent %s failed: %s", record.id, record.agent, e)
                span.set_status(trace.StatusCode.ERROR, str(e)[:200])
                message = f"{type(e).__name__}: {e}"[:1000]
                data: dict[str, Any] = {"error": message}
                if isinstance(e, BudgetExceeded):
                    # the checkpoint of the last finished step stays: resume with a larger budget
                    message = f"{BUDGET_EXCEEDED}: {e.message}"[:1000]
                    data = {
                        "error": message,
                        "type": BUDGET_EXCEEDED,
                        "scope": e.scope,
                        "limit": e.limit,
                        "used": e.used,
                        "maximum": e.maximum,
                    }
                await self._append(
                    record.id,
                    StoredEvent(seq=0, kind="run_failed", step=0, data=data, time=time.time()),
                )
                await self._settle(record, status="failed", error=message)
            finally:
                try:
                    if record.id not in self._dropped:
                        await self._release(record.id)
                finally:
                    self._settling.discard(record.id)
