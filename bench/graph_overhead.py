"""Per-step overhead of Keel's graph engine next to LangGraph, on no-op nodes.

Shapes: a 1,000-node linear graph, a 1-node loop of 1,000 steps, a 1,000-branch fan-out (per
branch). Each without checkpoints and with a durable checkpoint per step: Keel on a SQLite file
(WAL); LangGraph with its InMemorySaver and its SqliteSaver on a file (``durability="sync"``, so
every step is saved before the next starts, as Keel does). Figures are the best of several runs,
in microseconds per step; the ratio is Keel / LangGraph (the goal is <= 0.1).

LangGraph is installed in a separate environment only, never in the project's .venv:

    python3 -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install langgraph langgraph-checkpoint-sqlite \
        pydantic opentelemetry-api opentelemetry-sdk typer rich
    /tmp/benchvenv/bin/python bench/graph_overhead.py

Without LangGraph (e.g. ``.venv/bin/python bench/graph_overhead.py``) only Keel's figures print.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))

from pydantic import BaseModel

from keel.graph import START, Graph, Send, SqliteCheckpointer

N = 1000


class KeelState(BaseModel):
    n: int = 0


async def _noop(state: Any) -> None:
    return None


async def _count(state: KeelState) -> dict[str, int]:
    return {"n": state.n + 1}


def keel_graph(shape: str) -> Graph[KeelState]:
    g = Graph(KeelState, name=shape)
    if shape == "linear":
        for i in range(N):
            g.add_node(f"n{i}", _noop)
        g.add_edge(START, "n0")
        g.add_sequence(*(f"n{i}" for i in range(N)))
    elif shape == "loop":
        g.add_node("tick", _count)
        g.add_edge(START, "tick")
        g.add_conditional_edges("tick", lambda s: "tick" if s.n < N else "__end__")
    else:
        g.add_node("branch", _noop)
        g.add_node("join", _noop)
        g.add_conditional_edges(START, lambda s: [Send("branch", i) for i in range(N)])
        g.add_edge("branch", "join")
    return g


def time_keel(shape: str, durable: bool, tmp: Path, repeats: int) -> float:
    checkpointer = SqliteCheckpointer(tmp / f"keel-{shape}.db") if durable else None
    compiled = keel_graph(shape).compile(checkpointer=checkpointer, max_steps=N + 10)

    async def once() -> float:
        start = time.perf_counter()
        await compiled.run()
        return time.perf_counter() - start

    best = min(asyncio.run(once()) for _ in range(repeats + 1))
    return best / N * 1e6


class LGState(TypedDict):
    n: int


def langgraph_graph(shape: str) -> Any:
    from langgraph.graph import END, StateGraph
    from langgraph.types import Send as LGSend

    def noop(state: Any) -> dict[str, Any]:
        return {}

    def count(state: LGState) -> dict[str, int]:
        return {"n": state["n"] + 1}

    g = StateGraph(LGState)
    if shape == "linear":
        for i in range(N):
            g.add_node(f"n{i}", noop)
        g.add_edge(START, "n0")
        for i in range(N - 1):
            g.add_edge(f"n{i}", f"n{i + 1}")
    elif shape == "loop":
        g.add_node("tick", count)
        g.add_edge(START, "tick")
        g.add_conditional_edges("tick", lambda s: "tick" if s["n"] < N else END)
    else:
        g.add_node("branch", noop)
        g.add_node("join", noop)
        g.add_conditional_edges(START, lambda s: [LGSend("branch", {"n": i}) for i in range(N)])
        g.add_edge("branch", "join")
    return g


def time_langgraph(shape: str, saver: str, tmp: Path, repeats: int) -> float:
    checkpointer: Any = None
    if saver == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        checkpointer = InMemorySaver()
    elif saver == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(tmp / f"lg-{shape}.db", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        checkpointer = SqliteSaver(conn)
    compiled = langgraph_graph(shape).compile(checkpointer=checkpointer)
    best = float("inf")
    for run in range(repeats + 1):
        config = {"recursion_limit": N + 10, "configurable": {"thread_id": f"t{run}"}}
        kwargs: dict[str, Any] = {"durability": "sync"} if checkpointer is not None else {}
        start = time.perf_counter()
        compiled.invoke({"n": 0}, config, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best / N * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (best kept)")
    args = parser.parse_args()
    try:
        import langgraph  # noqa: F401

        have_langgraph = True
    except ImportError:
        have_langgraph = False
        print("langgraph is not installed here: Keel only (see the module docstring)\n")
    tmp = Path(tempfile.mkdtemp(prefix="graph-overhead-"))
    timers: list[tuple[str, Callable[[str], float]]] = [
        ("keel", lambda s: time_keel(s, False, tmp, args.repeats)),
        ("keel+sqlite", lambda s: time_keel(s, True, tmp, args.repeats)),
    ]
    if have_langgraph:
        from importlib.metadata import version

        print(f"langgraph {version('langgraph')}, us per no-op step (best of {args.repeats})\n")
        timers += [
            ("lg", lambda s: time_langgraph(s, "none", tmp, args.repeats)),
            ("lg+memory", lambda s: time_langgraph(s, "memory", tmp, args.repeats)),
            ("lg+sqlite", lambda s: time_langgraph(s, "sqlite", tmp, args.repeats)),
        ]
    header = f"{'shape':<8}" + "".join(f"{name:>13}" for name, _ in timers)
    if have_langgraph:
        header += f"{'ratio':>9}{'dur/sqlite':>12}{'dur/memory':>12}"
    print(header)
    for shape in ("linear", "loop", "fanout"):
        figures = {name: timer(shape) for name, timer in timers}
        line = f"{shape:<8}" + "".join(f"{figures[name]:>13.1f}" for name, _ in timers)
        if have_langgraph:
            line += f"{figures['keel'] / figures['lg']:>9.3f}"
            line += f"{figures['keel+sqlite'] / figures['lg+sqlite']:>12.3f}"
            line += f"{figures['keel+sqlite'] / figures['lg+memory']:>12.3f}"
        print(line, flush=True)
    if have_langgraph:
        print(
            "\nratio = keel / lg (no checkpoints); dur/sqlite = keel+sqlite / lg+sqlite (both a "
            "durable checkpoint per step on a SQLite file); dur/memory = keel+sqlite / lg+memory."
        )


if __name__ == "__main__":
    main()
