"""What a node sees while it runs: events it can emit, journalled effects and interrupts.

Every effect and interrupt of a task gets a key derived from the run, the step, the task and the
call's position in the task (``run-id:3/send#0/effect1``). Its result is journalled before the node
goes on, so when the step runs again (after a crash, a cancellation or an interrupt) the call
returns the recorded result instead of happening twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pydantic_core
from pydantic import TypeAdapter

from keel.graph.checkpoint.base import Checkpointer

__all__ = ["Event", "EventKind", "Interrupt", "RunContext", "side_effect"]

T = TypeVar("T")
EventKind = Literal[
    "run_started",
    "node_started",
    "node_finished",
    "node_failed",
    "state",
    "custom",
    "interrupt",
    "run_finished",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a run; ``path`` names the enclosing subgraph nodes."""

    kind: EventKind
    step: int
    node: str | None = None
    data: Any = None
    path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Interrupt:
    """A node waiting for input: ``value`` is what it asked; answer it by ``id`` on resume."""

    id: str
    node: str
    value: Any


class Interrupted(BaseException):
    """Raised inside a node to pause the run; the engine catches it (not an error)."""

    def __init__(self, interrupts: list[Interrupt]) -> None:
        super().__init__(f"{len(interrupts)} interrupt(s)")
        self.interrupts = interrupts


def side_effect(fn: Callable[..., T]) -> Callable[..., T]:
    """Mark a function (e.g. a tool handler) as having side effects: the agent loop journals
    its calls, so a resumed run returns the recorded result instead of calling it again."""
    fn.__keel_side_effect__ = True  # type: ignore[attr-defined]
    return fn


def has_side_effect(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "__keel_side_effect__", False))


class Journal:
    """Recorded effect results and interrupt answers of one run, by key."""

    __slots__ = ("_memory", "checkpointer", "run_id")

    def __init__(self, checkpointer: Checkpointer | None, run_id: str) -> None:
        self.checkpointer = checkpointer
        self.run_id = run_id
        self._memory: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        if self.checkpointer is None:
            return self._memory.get(key)
        return await self.checkpointer.get_effect(self.run_id, key)

    async def put(self, key: str, value: Any) -> None:
        text = pydantic_core.to_json(value).decode()
        if self.checkpointer is None:
            self._memory.setdefault(key, text)
        else:
            await self.checkpointer.put_effect(self.run_id, key, text)


class RunContext:
    """Passed to nodes that take a second argument: identity, events, effects, interrupts."""

    __slots__ = (
        "_effects",
        "_emit",
        "_interrupts",
        "journal",
        "key",
        "node",
        "path",
        "run_id",
        "step",
    )

    def __init__(
        self,
        run_id: str,
        step: int,
        node: str,
        key: str,
        journal: Journal,
        emit: Callable[[Event], None] | None,
        path: tuple[str, ...] = (),
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.node = node
        self.key = key
        self.journal = journal
        self.path = path
        self._emit = emit
        self._effects = 0
        self._interrupts = 0

    @property
    def streaming(self) -> bool:
        """True when someone consumes events, so a node can skip building them otherwise."""
        return self._emit is not None

    def emit(self, name: str, data: Any = None) -> None:
        """Send a custom event (a model token, a progress note) to ``stream()`` consumers."""
        if self._emit is not None:
            self._emit(
                Event("custom", self.step, self.node, {"name": name, "data": data}, self.path)
            )

    def next_effect_key(self) -> str:
        """The idempotency key the next ``effect`` call will use: ``run_id:step/node#task/effectN``
        (unique across runs, so it can be passed to remote APIs)."""
        return f"{self.run_id}:{self.key}/effect{self._effects}"

    async def effect(
        self,
        fn: Callable[..., Any],
        *args: Any,
        result_type: type[T] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn`` at most once per run for this position in the node, journalling its result.

        If ``fn`` has an ``idempotency_key`` parameter it receives the key, so a remote system
        can drop a duplicate made in the moment between the call and the journal write.
        ``result_type`` validates a replayed result back into its type (JSON loses types).
        """
        key = f"{self.key}/effect{self._effects}"  # the journal is per run already
        self._effects += 1
        recorded = await self.journal.get(key)
        if recorded is not None:
            value = pydantic_core.from_json(recorded)
            return value if result_type is None else TypeAdapter(result_type).validate_python(value)
        if "idempotency_key" in inspect.signature(fn).parameters:
            kwargs["idempotency_key"] = f"{self.run_id}:{key}"
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        await self.journal.put(key, result)
        return result

    async def interrupt(self, value: Any = None) -> Any:
        """Pause the run and ask for input; returns the answer once the run is resumed with it.

        The node runs again from its start on resume, so code before the interrupt must be
        repeatable: put side effects in ``effect``.
        """
        key = f"{self.key}/interrupt{self._interrupts}"
        self._interrupts += 1
        recorded = await self.journal.get(key)
        if recorded is not None:
            return pydantic_core.from_json(recorded)
        raise Interrupted([Interrupt(key, self.node, value)])
