"""Running a compiled graph: steps of parallel tasks, reducers, routing, checkpoints, events.

A run is a sequence of steps. Each step runs its tasks (nodes, or ``Send`` branches) concurrently,
folds their updates into the state in task order, routes to the next tasks, and, with a
checkpointer, saves the state and the next tasks, so the run can continue from there in any
process. The hot path does no work for features a run does not use (no events unless streamed,
no serialisation without a checkpointer).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic_core
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from keel.errors import (
    BudgetExceeded,
    GraphDefinitionError,
    GraphError,
    GraphStepLimitError,
    NodeError,
    RunNotFoundError,
)
from keel.graph.builder import END, START, NodeSpec, Send
from keel.graph.checkpoint.base import Checkpoint, Checkpointer, RunStatus
from keel.graph.runtime import Event, Interrupt, Interrupted, Journal, RunContext
from keel.graph.state import NodeFailure, StateSchema
from keel.graph.subgraph import run_subgraph
from keel.observe import semconv as sc
from keel.observe.conversation import conversation

if TYPE_CHECKING:
    from keel.graph.builder import Graph

__all__ = ["CompiledGraph", "RunResult"]

S = TypeVar("S", bound=BaseModel)
_tracer = trace.get_tracer("keel.graph")
_NO_ARG: Any = object()
_MISSING: Any = object()
Task = tuple[str, Any]
Emit = Callable[[Event], None]
PATH_ATTRIBUTE = "keel.graph.path"
RUN_ID_ATTRIBUTE = "keel.graph.run_id"


@dataclass(frozen=True)
class RunResult(Generic[S]):
    """How a run (or this part of it) ended: ``done`` or ``interrupted`` (waiting for input)."""

    run_id: str
    state: S
    status: RunStatus
    steps: int
    path: tuple[str, ...] = ()
    interrupts: tuple[Interrupt, ...] = ()


@dataclass
class _Run:
    run_id: str
    state: Any
    step: int
    tasks: list[Task]
    journal: Journal
    emit: Emit | None
    max_steps: int
    prefix: str = ""
    path: tuple[str, ...] = ()
    barriers: dict[str, set[str]] = field(default_factory=dict)
    visited: list[str] = field(default_factory=list)
    traced: bool = False  # the run's span is recording: give each node a span too


class _Failed:
    __slots__ = ("failure",)

    def __init__(self, failure: NodeFailure) -> None:
        self.failure = failure


class CompiledGraph(Generic[S]):
    """A checked graph, ready to ``run``, ``stream``, ``resume`` and draw with ``mermaid``."""

    def __init__(
        self, graph: Graph[S], *, checkpointer: Checkpointer | None, max_steps: int
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.graph = graph
        self.name = graph.name
        self.schema = StateSchema(graph.state)
        self.checkpointer = checkpointer
        self.max_steps = max_steps
        self._nodes: dict[str, NodeSpec] = dict(graph.nodes)
        self._edges = {k: tuple(v) for k, v in graph.edges.items()}
        self._routers = {k: tuple(v) for k, v in graph.routers.items()}
        self._joins: dict[str, tuple[str, ...]] = {}
        for target, sources in graph.waits.items():
            for s in sources:
                self._joins[s] = (*self._joins.get(s, ()), target)
        self._waits = dict(graph.waits)
        self._record_errors = self.schema.has_errors_field()

    def mermaid(self) -> str:
        """The graph as Mermaid flowchart text."""
        return self.graph.mermaid()

    # -- public entry points -------------------------------------------------------------

    async def run(
        self,
        input: S | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        max_steps: int | None = None,
    ) -> RunResult[S]:
        """Start a new run from ``input`` and drive it until it ends or is interrupted."""
        run = await self._start(input, run_id, max_steps, None)
        return await self._traced(run)

    async def resume(
        self, run_id: str, answer: Any = _MISSING, *, max_steps: int | None = None
    ) -> RunResult[S]:
        """Continue a run from its last checkpoint, answering its interrupts if it has any.

        ``answer`` is the answer to the single pending interrupt, or a dict of answers by
        interrupt id when several are pending."""
        run = await self._load(run_id, answer, max_steps, None)
        if isinstance(run, RunResult):
            return run
        return await self._traced(run)

    async def stream(
        self,
        input: S | Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        resume: bool = False,
        answer: Any = _MISSING,
        max_steps: int | None = None,
    ) -> AsyncIterator[Event]:
        """Run (or with ``resume=True`` continue) and yield events as they happen; the last
        event is ``run_finished`` with the ``RunResult`` as its data."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        emit = queue.put_nowait

        async def drive() -> None:
            try:
                if resume:
                    if run_id is None:
                        raise GraphError("resume=True needs the run_id to continue")
                    loaded = await self._load(run_id, answer, max_steps, emit)
                    result = loaded if isinstance(loaded, RunResult) else await self._traced(loaded)
                else:
                    result = await self._traced(await self._start(input, run_id, max_steps, emit))
                emit(Event("run_finished", result.steps, None, result))
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(drive())
        try:
            while (event := await queue.get()) is not None:
                yield event
            await task
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def get_state(self, run_id: str) -> tuple[S, Checkpoint]:
        """The state and checkpoint a run would continue from."""
        checkpoint = await self._latest(run_id)
        return self._decode_state(checkpoint.state), checkpoint

    async def update_state(
        self, run_id: str, update: Mapping[str, Any], *, as_node: str = "human"
    ) -> S:
        """Apply an update (through the reducers) to a paused run's state, e.g. a human edit.

        The latest checkpoint is rewritten in place, so the step numbers (and with them the
        keys of journalled effects and interrupt answers) stay the same on resume."""
        checkpoint = await self._latest(run_id)
        state = self.schema.apply(self._decode_state(checkpoint.state), [(as_node, update)])
        assert self.checkpointer is not None
        await self.checkpointer.put(
            Checkpoint(
                run_id,
                checkpoint.step,
                state.model_dump_json(),
                checkpoint.tasks,
                checkpoint.status,
                checkpoint.extra,
            )
        )
        return state  # type: ignore[return-value]

    # -- starting and loading ------------------------------------------------------------

    async def _start(
        self, input: Any, run_id: str | None, max_steps: int | None, emit: Emit | None
    ) -> _Run:
        run_id = run_id or uuid.uuid4().hex
        if self.checkpointer is not None and await self.checkpointer.latest(run_id) is not None:
            raise GraphError(f"run {run_id!r} already exists", hint="use resume() to continue it")
        state = self.schema.create(input)
        journal = Journal(self.checkpointer, run_id)
        run = _Run(run_id, state, 0, [], journal, emit, max_steps or self.max_steps)
        run.tasks = self._route(run, START, state, None)
        if emit is not None:
            emit(Event("run_started", 0, None, {"run_id": run_id}))
        await self._save(run, "running")
        return run

    async def _load(
        self, run_id: str, answer: Any, max_steps: int | None, emit: Emit | None
    ) -> _Run | RunResult[S]:
        checkpoint = await self._latest(run_id)
        state = self._decode_state(checkpoint.state)
        extra = pydantic_core.from_json(checkpoint.extra)
        pending = [Interrupt(**i) for i in extra.get("interrupts", ())]
        if checkpoint.status == "done":
            return RunResult(run_id, state, "done", checkpoint.step)
        journal = Journal(self.checkpointer, run_id)
        if pending:
            if answer is _MISSING:
                raise GraphError(
                    f"run {run_id!r} is waiting for input: {[i.id for i in pending]}",
                    hint="resume it with an answer",
                )
            answers = answer if len(pending) > 1 else {pending[0].id: answer}
            if not isinstance(answers, dict) or set(answers) != {i.id for i in pending}:
                raise GraphError(
                    f"run {run_id!r} has {len(pending)} interrupts; answer with a dict by id: "
                    f"{[i.id for i in pending]}"
                )
            for key, value in answers.items():
                await journal.put(key, value)
        tasks = [self._decode_task(t) for t in pydantic_core.from_json(checkpoint.tasks)]
        run = _Run(
            run_id, state, checkpoint.step, tasks, journal, emit, max_steps or self.max_steps
        )
        run.barriers = {k: set(v) for k, v in extra.get("barriers", {}).items()}
        if emit is not None:
            emit(Event("run_started", checkpoint.step, None, {"run_id": run_id, "resumed": True}))
        return run

    async def _latest(self, run_id: str) -> Checkpoint:
        if self.checkpointer is None:
            raise RunNotFoundError(
                f"cannot find run {run_id!r}: the graph has no checkpointer",
                hint="compile(checkpointer=SqliteCheckpointer(path))",
            )
        checkpoint = await self.checkpointer.latest(run_id)
        if checkpoint is None:
            raise RunNotFoundError(f"no checkpoint for run {run_id!r}")
        return checkpoint

    def _decode_state(self, text: str) -> S:
        return self.schema.cls.model_validate_json(text)  # type: ignore[return-value]

    def _decode_task(self, raw: list[Any]) -> Task:
        if len(raw) == 1:
            return (raw[0], _NO_ARG)
        name, arg = raw
        spec = self._nodes.get(name)
        if spec is not None and spec.input_type is not None and isinstance(arg, dict):
            arg = spec.input_type.model_validate(arg)
        return (name, arg)

    async def _save(
        self, run: _Run, status: RunStatus, interrupts: list[Interrupt] | None = None
    ) -> None:
        if self.checkpointer is None or run.prefix:
            return
        tasks = [[n] if a is _NO_ARG else [n, a] for n, a in run.tasks]
        extra: dict[str, Any] = {}
        if run.barriers:
            extra["barriers"] = {k: sorted(v) for k, v in run.barriers.items()}
        if interrupts:
            extra["interrupts"] = [
                {"id": i.id, "node": i.node, "value": i.value} for i in interrupts
            ]
        await self.checkpointer.put(
            Checkpoint(
                run.run_id,
                run.step,
                run.state.model_dump_json(),
                pydantic_core.to_json(tasks).decode(),
                status,
                pydantic_core.to_json(extra).decode() if extra else "{}",
                time.time(),
            )
        )

    # -- the loop ------------------------------------------------------------------------

    async def _traced(self, run: _Run) -> RunResult[S]:
        # The run id is the conversation, unless the run is part of an outer one (a session).
        with (
            conversation(run.run_id),
            _tracer.start_as_current_span(f"invoke_agent {self.name}") as span,
        ):
            span.set_attribute(sc.GEN_AI_OPERATION_NAME, sc.OPERATION_INVOKE_AGENT)
            span.set_attribute(sc.GEN_AI_AGENT_NAME, self.name)
            span.set_attribute(RUN_ID_ATTRIBUTE, run.run_id)
            run.traced = span.is_recording()
            try:
                result = await self._execute(run)
            except BudgetExceeded as e:
                # The run stops cleanly: its last completed step is checkpointed, and the
                # error carries that partial state so the caller can read it or resume.
                e.run_id, e.state, e.steps = run.run_id, run.state, run.step
                raise
            finally:
                span.set_attribute(sc.KEEL_AGENT_STEPS, run.step)
                span.set_attribute(PATH_ATTRIBUTE, run.visited[-200:])
            return result

    async def _execute(self, run: _Run) -> RunResult[S]:
        """Drive ``run`` until no tasks are left or a node interrupts."""
        emit = run.emit
        while run.tasks:
            if run.step >= run.max_steps:
                raise GraphStepLimitError(
                    f"graph {self.name!r} reached max_steps={run.max_steps} in run {run.run_id!r}",
                    hint="raise max_steps, or check the graph for a loop with no way out",
                )
            step = run.step + 1
            tasks = run.tasks
            if len(tasks) == 1:
                outcomes = [await self._task(run, step, 0, tasks[0])]
            else:
                futures = [
                    asyncio.ensure_future(self._task(run, step, i, t)) for i, t in enumerate(tasks)
                ]
                try:
                    outcomes = await asyncio.gather(*futures)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
            interrupts = [i for o in outcomes if isinstance(o, Interrupted) for i in o.interrupts]
            if interrupts:
                if emit is not None:
                    for i in interrupts:
                        emit(Event("interrupt", step, i.node, i, run.path))
                await self._save(run, "interrupted", interrupts)
                return RunResult(
                    run.run_id,
                    run.state,
                    "interrupted",
                    run.step,
                    tuple(run.visited),
                    tuple(interrupts),
                )
            updates: list[tuple[str, Mapping[str, Any]]] = []
            for (name, _), outcome in zip(tasks, outcomes, strict=True):
                run.visited.append(name)
                if isinstance(outcome, _Failed):
                    if self._record_errors:
                        updates.append((name, {"errors": [outcome.failure]}))
                elif outcome:
                    updates.append((name, outcome))
            if updates:
                run.state = self.schema.apply(run.state, updates)
                if emit is not None:
                    emit(Event("state", step, None, run.state, run.path))
            run.step = step
            following: list[Task] = []
            seen: set[str] = set()
            for (name, _), outcome in zip(tasks, outcomes, strict=True):
                failed = outcome if isinstance(outcome, _Failed) else None
                following.extend(self._route(run, name, run.state, failed, seen))
            run.tasks = following
            await self._save(run, "running" if following else "done")
        return RunResult(run.run_id, run.state, "done", run.step, tuple(run.visited))

    def _route(
        self, run: _Run, name: str, state: Any, failed: _Failed | None, seen: set[str] | None = None
    ) -> list[Task]:
        seen = set() if seen is None else seen
        out: list[Task] = []
        if failed is not None:
            fallback = self._nodes[name].fallback
            targets: list[Any] = [fallback]
        else:
            targets = list(self._edges.get(name, ()))
            for router in self._routers.get(name, ()):
                chosen = router.fn(state)
                if isinstance(chosen, list | tuple):
                    targets.extend(chosen)
                elif chosen is not None:
                    targets.append(chosen)
            for join in self._joins.get(name, ()):
                arrived = run.barriers.setdefault(join, set())
                arrived.add(name)
                if arrived >= self._waits[join]:
                    del run.barriers[join]
                    targets.append(join)
        for t in targets:
            if isinstance(t, Send):
                if t.node not in self._nodes:
                    raise GraphDefinitionError(f"{name!r} sent to unknown node {t.node!r}")
                out.append((t.node, t.arg))
            elif t == END:
                continue
            elif t not in self._nodes:
                raise GraphDefinitionError(f"{name!r} routed to unknown node {t!r}")
            elif t not in seen:
                seen.add(t)
                out.append((t, _NO_ARG))
        return out

    async def _task(self, run: _Run, step: int, index: int, task: Task) -> Any:
        if not run.traced:
            return await self._run_task(run, step, index, task)
        name = task[0]
        attributes: dict[str, str | int] = {sc.KEEL_GRAPH_NODE: name, sc.KEEL_GRAPH_STEP: step}
        with _tracer.start_as_current_span(f"node {name}", attributes=attributes) as span:
            outcome = await self._run_task(run, step, index, task)
            if isinstance(outcome, _Failed):
                span.set_attribute(sc.ERROR_TYPE, outcome.failure.type)
                span.set_status(StatusCode.ERROR, outcome.failure.message[:200])
            elif isinstance(outcome, Interrupted):
                span.set_attribute("keel.graph.interrupted", True)
            return outcome

    async def _run_task(self, run: _Run, step: int, index: int, task: Task) -> Any:
        name, arg = task
        spec = self._nodes[name]
        emit = run.emit
        if emit is not None:
            emit(Event("node_started", step, name, None if arg is _NO_ARG else arg, run.path))
        value = run.state if arg is _NO_ARG else arg
        attempts = spec.retry.max_attempts if spec.retry is not None else 1
        attempt = 0
        while True:
            attempt += 1
            try:
                if not spec.takes_ctx:
                    out = spec.fn(value)
                    if spec.is_async:
                        out = await out
                else:
                    key = f"{run.prefix}{step}/{name}#{index}"
                    ctx = RunContext(run.run_id, step, name, key, run.journal, emit, run.path)
                    if isinstance(spec.fn, CompiledGraph):
                        out = await run_subgraph(spec.fn, self.schema, value, ctx, run.max_steps)
                    else:
                        out = spec.fn(value, ctx)
                        if spec.is_async:
                            out = await out
            except Interrupted as e:
                return e
            except BudgetExceeded:
                raise  # a budget stop ends the run: no retry, no fallback node
            except Exception as e:
                policy = spec.retry
                if policy is not None and attempt < attempts and isinstance(e, policy.retry_on):
                    if run.traced:
                        trace.get_current_span().add_event(
                            "keel.retry",
                            {sc.KEEL_RETRY_ATTEMPT: attempt, sc.ERROR_TYPE: type(e).__name__},
                        )
                    if policy.backoff:
                        await asyncio.sleep(policy.backoff * 2 ** (attempt - 1))
                    continue
                failure = NodeFailure(
                    node=name,
                    step=step,
                    type=type(e).__name__,
                    message=str(e)[:500],
                    attempts=attempt,
                )
                if emit is not None:
                    emit(Event("node_failed", step, name, failure, run.path))
                if spec.fallback is None:
                    raise NodeError(
                        f"node {name!r} failed at step {step} after {attempt} attempt(s): "
                        f"{failure.type}: {failure.message}",
                        hint="give the node a retry policy or a fallback node",
                    ) from e
                return _Failed(failure)
            if out is not None and not isinstance(out, Mapping):
                raise GraphError(
                    f"node {name!r} returned {type(out).__name__}; return a dict of updates or None"
                )
            if emit is not None:
                emit(Event("node_finished", step, name, out, run.path))
            return out
