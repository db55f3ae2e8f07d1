"""Cost of tracing per traced operation: a model call (one ``chat`` span) and a graph step (one
``node`` span), in microseconds, for each way Keel can record spans.

Modes (each in a fresh process, since a process's tracer provider is set once):
``off`` (no tracer provider), ``sqlite`` (the default local store), ``sqlite+metrics`` (plus
span-derived metrics to an in-memory reader), ``sqlite+capture`` (plus redacted message content),
``sqlite+otlp`` (plus OTLP/HTTP export, batched, to a receiver on 127.0.0.1 in this process).

    .venv/bin/python bench/trace_overhead.py            # all modes
    .venv/bin/python bench/trace_overhead.py sqlite     # one mode
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))

MODES = ("off", "sqlite", "sqlite+metrics", "sqlite+capture", "sqlite+otlp")
CALLS = 2_000
STEPS = 2_000
REPEATS = 3


class _Sink(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _setup(mode: str, directory: Path) -> None:
    if mode == "off":
        return
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from keel.observe import setup_tracing
    from keel.observe.otlp import OTLPConfig

    otlp = None
    if mode == "sqlite+otlp":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        otlp = OTLPConfig(f"http://127.0.0.1:{server.server_address[1]}", metrics=False)
    setup_tracing(
        directory / "traces.db",
        otlp=otlp,
        capture_content=mode == "sqlite+capture",
        metric_readers=[InMemoryMetricReader()] if mode == "sqlite+metrics" else (),
    )


async def _model_calls() -> float:
    from keel.llm import InstrumentedModel
    from keel.llm.messages import UserMessage
    from keel.llm.testing import ScriptedModel

    model = InstrumentedModel(ScriptedModel(["fine, thanks"] * CALLS), provider="bench")
    messages = [UserMessage(content="How are you? " * 20)]
    start = time.perf_counter()
    for _ in range(CALLS):
        await model.request(messages)
    return (time.perf_counter() - start) / CALLS * 1e6


async def _graph_steps() -> float:
    from pydantic import BaseModel

    from keel.graph import END, START, Graph

    class State(BaseModel):
        n: int = 0

    graph = Graph(State, name="loop")
    graph.add_node("step", lambda s: {"n": s.n + 1})
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda s: "step" if s.n < STEPS else END, ["step", END])
    compiled = graph.compile(max_steps=STEPS + 1)
    start = time.perf_counter()
    await compiled.run({})
    return (time.perf_counter() - start) / STEPS * 1e6


def _measure(mode: str) -> tuple[float, float]:
    _setup(mode, Path(tempfile.mkdtemp()))
    calls = min(asyncio.run(_model_calls()) for _ in range(REPEATS))
    steps = min(asyncio.run(_graph_steps()) for _ in range(REPEATS))
    if mode != "off":
        from keel.observe import shutdown_tracing

        shutdown_tracing()
    return calls, steps


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        calls, steps = _measure(sys.argv[2])
        print(f"{calls:.1f} {steps:.1f}")
        return
    modes = [m for m in sys.argv[1:] if m in MODES] or list(MODES)
    print(f"{'mode':<16} {'us/model call':>14} {'us/graph step':>14}   (best of {REPEATS})")
    for mode in modes:
        result = subprocess.run(
            [sys.executable, __file__, "--child", mode], capture_output=True, text=True, check=True
        )
        calls, steps = result.stdout.split()
        print(f"{mode:<16} {float(calls):>14.1f} {float(steps):>14.1f}")


if __name__ == "__main__":
    main()
