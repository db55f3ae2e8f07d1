"""Declaring a graph: nodes, static and conditional edges, joins, then ``compile()``.

A node is a function ``(state) -> update`` or ``(state, ctx) -> update`` (async or not) that
returns a dict of changed fields or None; a compiled graph can be a node too (a subgraph). A
conditional edge is a router ``(state) -> name | Send | list of them``; a ``Send`` starts one
parallel branch with its own input, so a router can fan out to N branches that a join collects.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from keel.errors import GraphDefinitionError

if TYPE_CHECKING:
    from keel.graph.checkpoint.base import Checkpointer
    from keel.graph.engine import CompiledGraph

__all__ = ["END", "START", "Graph", "NodeSpec", "RetryPolicy", "Router", "Send"]

START = "__start__"
END = "__end__"
S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Send:
    """Run ``node`` as its own branch with ``arg`` as its input instead of the state.

    ``arg`` must be JSON-compatible (or a Pydantic model) so the branch can be checkpointed.
    """

    node: str
    arg: Any = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per node and the exceptions worth retrying; the delay doubles each time."""

    max_attempts: int = 3
    backoff: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node as the engine runs it."""

    name: str
    fn: Any
    takes_ctx: bool
    is_async: bool
    retry: RetryPolicy | None = None
    fallback: str | None = None
    input_type: type[BaseModel] | None = None


@dataclass(frozen=True, slots=True)
class Router:
    """A conditional edge: ``fn(state)`` names the next node(s); ``targets`` is for drawing."""

    fn: Callable[[Any], Any]
    targets: tuple[str, ...] | None = None


def _arity(fn: Callable[..., Any]) -> int:
    """Positional parameters without a default (those with one are the function's own)."""
    params = inspect.signature(fn).parameters.values()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in positional and p.default is p.empty)


class Graph(Generic[S]):
    """A graph over the state model ``state``; build it, then ``compile()`` it to run it."""

    def __init__(self, state: type[S], *, name: str = "graph") -> None:
        self.state = state
        self.name = name
        self.nodes: dict[str, NodeSpec] = {}
        self.edges: dict[str, list[str]] = {}
        self.routers: dict[str, list[Router]] = {}
        self.waits: dict[str, frozenset[str]] = {}

    def add_node(
        self,
        name: str,
        fn: Callable[..., Any] | CompiledGraph[Any],
        *,
        retry: RetryPolicy | None = None,
        fallback: str | None = None,
        input_type: type[BaseModel] | None = None,
    ) -> Graph[S]:
        """Add a node. ``fallback`` names the node to go to when it fails after its retries
        (the failure is appended to ``state.errors`` when the state has that field);
        ``input_type`` validates a ``Send`` argument read back from a checkpoint."""
        from keel.graph.engine import CompiledGraph

        if not name or name in (START, END):
            raise GraphDefinitionError(f"{name!r} cannot be a node name")
        if name in self.nodes:
            raise GraphDefinitionError(f"a node named {name!r} already exists")
        if isinstance(fn, CompiledGraph):
            spec = NodeSpec(name, fn, True, True, retry, fallback, input_type)
        elif callable(fn):
            arity = _arity(fn)
            if arity not in (1, 2):
                raise GraphDefinitionError(
                    f"node {name!r} must take (state) or (state, ctx), it takes {arity} arguments"
                )
            is_async = inspect.iscoroutinefunction(fn)
            spec = NodeSpec(name, fn, arity == 2, is_async, retry, fallback, input_type)
        else:
            raise GraphDefinitionError(f"node {name!r} is neither callable nor a compiled graph")
        self.nodes[name] = spec
        return self

    def add_edge(self, source: str | Sequence[str], target: str) -> Graph[S]:
        """Go from ``source`` to ``target``; with a list of sources, ``target`` waits for all."""
        if isinstance(source, str):
            self.edges.setdefault(source, []).append(target)
        else:
            if not source:
                raise GraphDefinitionError("a join needs at least one source")
            self.waits[target] = frozenset(source)
        return self

    def add_conditional_edges(
        self, source: str, router: Callable[[Any], Any], targets: Iterable[str] | None = None
    ) -> Graph[S]:
        """After ``source``, call ``router(state)`` for the next node(s) or ``Send``s.

        ``targets`` lists where the router may go, so ``mermaid()`` can draw it."""
        routes = tuple(targets) if targets is not None else None
        self.routers.setdefault(source, []).append(Router(router, routes))
        return self

    def add_sequence(self, *names: str) -> Graph[S]:
        """Chain existing nodes with static edges: ``a -> b -> c`` (START is not implied)."""
        for a, b in itertools.pairwise(names):
            self.add_edge(a, b)
        return self

    def _check(self) -> None:
        known = set(self.nodes) | {END}
        if not self.edges.get(START) and START not in self.routers:
            raise GraphDefinitionError(f"graph {self.name!r} has no edge from START")
        for source, targets in self.edges.items():
            for name in [source, *targets]:
                if name != START and name not in known:
                    raise GraphDefinitionError(f"edge {source!r} -> {name!r}: unknown node")
        for source, routers in self.routers.items():
            if source != START and source not in self.nodes:
                raise GraphDefinitionError(f"conditional edge from unknown node {source!r}")
            for r in routers:
                for t in r.targets or ():
                    if t not in known:
                        raise GraphDefinitionError(f"router target {t!r} is not a node")
        for target, sources in self.waits.items():
            for name in [target, *sources]:
                if name not in self.nodes:
                    raise GraphDefinitionError(
                        f"join {sorted(sources)} -> {target!r}: unknown node"
                    )
        for spec in self.nodes.values():
            if spec.fallback is not None and spec.fallback not in known:
                raise GraphDefinitionError(
                    f"node {spec.name!r}: unknown fallback {spec.fallback!r}"
                )

    def compile(
        self, *, checkpointer: Checkpointer | None = None, max_steps: int = 10_000
    ) -> CompiledGraph[S]:
        """Check the graph and return the runnable form."""
        from keel.graph.engine import CompiledGraph

        self._check()
        return CompiledGraph(self, checkpointer=checkpointer, max_steps=max_steps)

    def mermaid(self) -> str:
        """The graph as Mermaid flowchart text; conditional edges are dotted."""
        ids = {START: "__start__", END: "__end__"}
        lines = ["flowchart TD", f"    {START}([start])", f"    {END}([end])"]
        for name in self.nodes:
            lines.append(f"    {_mid(name)}[{name}]")
        for source, targets in self.edges.items():
            for t in targets:
                lines.append(f"    {ids.get(source, _mid(source))} --> {ids.get(t, _mid(t))}")
        for source, routers in self.routers.items():
            for r in routers:
                for t in r.targets or ("?",):
                    target = ids.get(t, _mid(t)) if t != "?" else f"{_mid(source)}_route{{?}}"
                    lines.append(f"    {ids.get(source, _mid(source))} -.-> {target}")
        for target, sources in self.waits.items():
            for s in sorted(sources):
                lines.append(f"    {_mid(s)} ==> {_mid(target)}")
        for spec in self.nodes.values():
            if spec.fallback is not None:
                fb = ids.get(spec.fallback, _mid(spec.fallback))
                lines.append(f"    {_mid(spec.name)} -. error .-> {fb}")
        return "\n".join(lines) + "\n"


def _mid(name: str) -> str:
    """A Mermaid-safe node id."""
    return "n_" + "".join(c if c.isalnum() or c == "_" else "_" for c in name)
