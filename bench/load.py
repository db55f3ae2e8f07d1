"""Load: many concurrent agent sessions against a simulated OpenAI-compatible endpoint.

A local server (``bench/load_server.py``, a separate process) answers every chat completion after
200 ms: a tool call first, then a final answer, so each session is model -> tool -> model (three
steps: two model calls and one tool call). Each session is a Keel ``Agent`` run, or an
``agent_graph`` run with an in-memory or a SQLite checkpointer, through ``OpenAIModel`` wrapped
like ``keel.stack.open_model`` wraps it (timeout, retry, GenAI instrumentation, budget).

``N`` sessions run concurrently, closed-loop: N workers each start their next session when the
previous one ends, after one untimed warm-up round of N sessions (which also opens the HTTP
connections). Reported, for N = 10, 100 and 1,000:

- runs/s: completed sessions per second of wall time (the ideal is N / 0.4 s).
- CPU/step: CPU time (user + system, all threads) of the bench process per step, measured with
  getrusage over the timed phase. Measured twice with the same load: against the server through
  the real OpenAI client ("total"), and against a no-op ``Model`` that sleeps the same 200 ms in
  process ("framework": agent loop, graph engine, checkpointer, wrappers, tool call, asyncio).
  The difference, per model call, is what the HTTP client costs (openai SDK + httpx2 + JSON +
  sockets): "client/call".
- p50/p99 added latency: session wall time minus the 2 x 200 ms the server sleeps (real client).
- peak RSS: the process's RSS high-water mark (ru_maxrss), each configuration in a fresh process,
  with the RSS after imports ("base") for comparison.

The openai client's default pool (httpx2: 1,000 connections, 100 kept alive) would close and
reopen connections above 100 sessions and queue above 1,000. And the pool's CPU cost per request
grows with the number of connections it holds (measured here: about 0.8 ms per request with 10
connections, 4.8 ms with 400). So the sessions share ``ceil(N / --pool-size)`` models, each with
its own client whose pool keeps ``--pool-size`` (default 50) connections alive
(``max_connections = max_keepalive_connections``); session i uses model i mod K. With
``--pool-size 0`` all sessions share one client with N + 16 connections.
Tracing is off (the OpenTelemetry API without an SDK provider: spans cost almost nothing);
``--trace`` records every span in a SQLite trace store instead.

    .venv/bin/python bench/load.py                          # everything (a few minutes)
    .venv/bin/python bench/load.py --sizes 10 100 --modes agent
    .venv/bin/python bench/load.py --via-service            # through `keel serve` instead

``--via-service`` starts ``keel serve`` (no auth, tracing off, one tool-loop agent ``load`` on the
simulated endpoint) and sends each session as one request to its OpenAI-compatible
``/v1/chat/completions`` from a client process; reported are the service process's CPU per step
(its HTTP server, run registry, SQLite checkpoints and event log, and its own OpenAI client) and
its peak RSS (VmHWM, over the service's life so far).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))

from keel.config import KeelSettings
from keel.llm.base import Model
from keel.llm.messages import (
    AssistantMessage,
    Message,
    ModelSettings,
    Response,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolMessage,
    Usage,
    UserMessage,
)

DELAY = 0.2
MODES = ("agent", "graph-memory", "graph-sqlite")
BACKENDS = ("openai", "noop")
STEPS_PER_SESSION = 3
MODEL_CALLS_PER_SESSION = 2
HERE = Path(__file__).resolve().parent


class NoopModel(Model):
    """Answers like the simulated server, after the same delay, without any HTTP: what remains
    of the bench process's CPU is the framework's."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.counter = 0

    @property
    def name(self) -> str:
        return "simulated"

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> Response:
        self.counter += 1
        await asyncio.sleep(self.delay)
        last = messages[-1] if messages else None
        if not isinstance(last, ToolMessage) and tools:
            call = ToolCallPart(
                id=f"call_{self.counter}", name=tools[0].name, arguments={"key": "k"}
            )
            message = AssistantMessage(parts=(call,))
            finish = "tool_calls"
        else:
            content = last.content if isinstance(last, ToolMessage) else ""
            message = AssistantMessage(parts=(TextPart(text=f"done: {content}"[:200]),))
            finish = "stop"
        usage = Usage(input_tokens=20 * len(messages), output_tokens=8)
        return Response(message=message, usage=usage, model_name="simulated", finish_reason=finish)


def wrap_like_open_model(inner: Model, settings: KeelSettings) -> Model:
    """The wrappers ``keel.stack.open_model`` puts around one model (cache off, no fallback)."""
    from keel.budget.meter import BudgetedModel
    from keel.llm import InstrumentedModel, RetryModel, TimeoutModel

    llm = settings.llm
    model = inner
    if llm.timeout_s is not None:
        model = TimeoutModel(model, timeout=llm.timeout_s)
    if llm.retries:
        model = RetryModel(model, max_attempts=llm.retries + 1)
    traced = InstrumentedModel(model, provider="openai-compatible")
    return BudgetedModel(traced, max_tokens=llm.max_tokens)


def make_models(backend: str, url: str, sessions: int, pool_size: int) -> list[Model]:
    """The models the sessions share: one per ``pool_size`` sessions, each with its own client."""
    settings = KeelSettings()
    if backend == "noop":
        return [wrap_like_open_model(NoopModel(DELAY), settings)]
    import httpx2
    import openai

    from keel.llm.openai import OpenAIModel
    from keel.llm.provider import compatible_provider

    count = math.ceil(sessions / pool_size) if pool_size else 1
    pool = min(sessions, pool_size) if pool_size else sessions + 16
    models: list[Model] = []
    for _ in range(count):
        http = openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=pool, max_keepalive_connections=pool)
        )
        inner = OpenAIModel("simulated", compatible_provider(url), http_client=http)
        models.append(wrap_like_open_model(inner, settings))
    return models


def lookup_tools() -> Any:
    """The trivial tool every session calls once (``load:TOOLS`` for ``keel serve``)."""
    from keel.tools import ToolRegistry

    tools = ToolRegistry()

    @tools.tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key}"

    return tools


TOOLS = lookup_tools()


def make_session(mode: str, models: list[Model], workdir: Path) -> Callable[[int], Awaitable[None]]:
    """A function running session ``i`` to its end (with model ``i mod len(models)``)."""
    tools = lookup_tools()

    if mode == "agent":
        from keel.graph import Agent

        agents = [Agent(model, tools, name="load") for model in models]

        async def run_agent(i: int) -> None:
            result = await agents[i % len(agents)].run("Look up k and tell me.")
            assert result.output.startswith("done: value of"), result.output

        return run_agent

    from keel.graph.checkpoint.base import Checkpointer
    from keel.graph.loop import agent_graph

    checkpointer: Checkpointer
    if mode == "graph-memory":
        from keel.graph.checkpoint.memory import MemoryCheckpointer

        checkpointer = MemoryCheckpointer()
    elif mode == "graph-sqlite":
        from keel.graph.checkpoint.sqlite import SqliteCheckpointer

        checkpointer = SqliteCheckpointer(workdir / "checkpoints.db")
    else:
        raise SystemExit(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
    graphs = [
        agent_graph(model, tools, name="load").compile(checkpointer=checkpointer)
        for model in models
    ]

    async def run_graph(i: int) -> None:
        prompt = {"messages": [UserMessage(content="Look up k and tell me.")]}
        result = await graphs[i % len(graphs)].run(prompt)
        assert result.state.output.startswith("done: value of"), result.state.output

    return run_graph


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _server_cpu(pid: int) -> float:
    with Path(f"/proc/{pid}/stat").open() as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    mode: str,
    backend: str,
    sessions: int,
    per_worker: int,
    url: str,
    server_pid: int,
    trace: bool,
    pool_size: int,
) -> dict[str, Any]:
    """One configuration, in this (fresh) process."""
    with tempfile.TemporaryDirectory(prefix="keel-load-") as tmp:
        workdir = Path(tmp)
        if trace:
            from keel.observe import setup_tracing

            setup_tracing(workdir / "traces.db")
        models = make_models(backend, url, sessions, pool_size)
        session = make_session(mode, models, workdir)
        base_rss = _rss_mb()
        await asyncio.gather(*(session(i) for i in range(sessions)))  # warm-up, opens connections
        latencies: list[float] = []

        async def worker(i: int) -> None:
            for _ in range(per_worker):
                start = time.perf_counter()
                await session(i)
                latencies.append(time.perf_counter() - start)

        server0, cpu0, wall0 = _server_cpu(server_pid), _cpu(), time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(sessions)))
        wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
        server = _server_cpu(server_pid) - server0
        if trace:
            from keel.observe import shutdown_tracing

            shutdown_tracing()
    latencies.sort()
    runs = len(latencies)
    return {
        "mode": mode,
        "backend": backend,
        "sessions": sessions,
        "runs": runs,
        "wall_s": wall,
        "runs_per_s": runs / wall,
        "cpu_s": cpu,
        "cpu_per_step_us": cpu / (runs * STEPS_PER_SESSION) * 1e6,
        "cpu_share": cpu / wall,
        "clients": len(models),
        "server_cpu_s": server,
        "p50_added_ms": (_quantile(latencies, 0.50) - 2 * DELAY) * 1e3,
        "p99_added_ms": (_quantile(latencies, 0.99) - 2 * DELAY) * 1e3,
        "base_rss_mb": base_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _status(pid: int, field: str) -> float:
    """A ``kB`` field of /proc/PID/status, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure_service(sessions: int, per_worker: int, url: str, pid: int) -> dict[str, Any]:
    """One size through ``keel serve`` (at ``url``, process ``pid``), from this process."""
    import httpx2
    import openai

    pool = sessions + 16
    client = openai.AsyncOpenAI(
        api_key="none",
        base_url=url,
        max_retries=0,
        timeout=600,
        # uvicorn closes a connection idle for 5 s: drop idle ones sooner, or a request may
        # race the close and fail with a read error.
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(
                max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=2.0
            )
        ),
    )

    async def session() -> None:
        reply = await client.chat.completions.create(
            model="load", messages=[{"role": "user", "content": "Look up k and tell me."}]
        )
        content = reply.choices[0].message.content or ""
        assert content.startswith("done: value of"), content

    await asyncio.gather(*(session() for _ in range(sessions)))
    latencies: list[float] = []

    async def worker() -> None:
        for _ in range(per_worker):
            start = time.perf_counter()
            await session()
            latencies.append(time.perf_counter() - start)

    cpu0, wall0 = _server_cpu(pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    wall, cpu = time.perf_counter() - wall0, _server_cpu(pid) - cpu0
    latencies.sort()
    runs = len(latencies)
    return {
        "mode": "via-service",
        "sessions": sessions,
        "runs": runs,
        "wall_s": wall,
        "runs_per_s": runs / wall,
        "service_cpu_s": cpu,
        "cpu_share": cpu / wall,
        "cpu_per_step_us": cpu / (runs * STEPS_PER_SESSION) * 1e6,
        "p50_added_ms": (_quantile(latencies, 0.50) - 2 * DELAY) * 1e3,
        "p99_added_ms": (_quantile(latencies, 0.99) - 2 * DELAY) * 1e3,
        "service_peak_rss_mb": _status(pid, "VmHWM"),
    }


def start_service(model_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``keel serve`` with one agent on the simulated endpoint; wait until it answers."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = workdir / "keel.toml"
    config.write_text(
        "[trace]\nenabled = false\n\n[serve]\nauth = false\ndocs_agent = false\n\n"
        '[serve.agents.load]\nkind = "agent"\n'
        f'model = "openai-compatible:{model_url}#simulated"\n'
        'tools = "load:TOOLS"\nmax_turns = 4\n'
    )
    keel = Path(sys.executable).parent / "keel"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    log = (workdir / "serve.log").open("wb")
    data = str(workdir / "data")
    proc = subprocess.Popen(
        [str(keel), "serve", "--port", str(port), "--config", str(config), "--data-dir", data],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"keel serve exited:\n{(workdir / 'serve.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("keel serve did not answer /healthz within 60 s")


def via_service(args: argparse.Namespace, model_url: str) -> None:
    header = (
        f"{'mode':<13}{'N':>5}{'runs':>6}{'runs/s':>8}{'ideal':>6}{'cpu%':>5}{'run/cpu-s':>10}"
        f"{'svc CPU/step':>13}{'p50 add':>9}{'p99 add':>9}{'svc peak RSS':>13}"
    )
    print(header)
    print("-" * len(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="keel-load-serve-") as tmp:
        service, url = start_service(model_url, Path(tmp))
        try:
            for n in args.sizes:
                per_worker = args.runs_per_session or min(25, max(3, math.ceil(1000 / n)))
                cmd = [sys.executable, __file__, "--service-child"]
                cmd.append(json.dumps([n, per_worker, url, service.pid]))
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    log = (Path(tmp) / "serve.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(
                        f"via-service/{n} failed:\n{done.stderr[-1500:]}\nkeel serve:\n{log}"
                    )
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{'via-service':<13}{n:>5}{r['runs']:>6}{r['runs_per_s']:>8.1f}"
                    f"{n / (2 * DELAY):>6.0f}{r['cpu_share'] * 100:>5.0f}"
                    f"{r['runs'] / r['service_cpu_s']:>10.0f}{r['cpu_per_step_us']:>11.0f}us"
                    f"{r['p50_added_ms']:>7.0f}ms{r['p99_added_ms']:>7.0f}ms"
                    f"{r['service_peak_rss_mb']:>11.0f}MB",
                    flush=True,
                )
        finally:
            service.terminate()
            service.wait(30)


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def start_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "load_server.py"), "--port", "0", "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"the simulated server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def run_child(args: argparse.Namespace, mode: str, backend: str, n: int, url: str, pid: int) -> Any:
    per_worker = args.runs_per_session or min(25, max(3, math.ceil(1000 / n)))
    cmd = [
        sys.executable,
        __file__,
        "--child",
        json.dumps([mode, backend, n, per_worker, url, pid, args.trace, args.pool_size]),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode}/{backend}/{n} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--runs-per-session", type=int, default=0, help="sessions each worker runs (default: 3-25)"
    )
    parser.add_argument(
        "--pool-size", type=int, default=50, help="sessions per client (0: one client for all)"
    )
    parser.add_argument("--trace", action="store_true", help="record spans in a SQLite store")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--via-service", action="store_true", help="through `keel serve`")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--service-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.child:
        mode, backend, n, per_worker, url, pid, trace, pool = json.loads(args.child)
        result = asyncio.run(measure(mode, backend, n, per_worker, url, pid, trace, pool))
        print(json.dumps(result))
        return
    if args.service_child:
        n, per_worker, url, pid = json.loads(args.service_child)
        print(json.dumps(asyncio.run(measure_service(n, per_worker, url, pid))))
        return

    server, url = start_server(DELAY)
    results: list[dict[str, Any]] = []
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, server delay "
        f"{DELAY * 1e3:.0f} ms, tracing {'on (SQLite store)' if args.trace else 'off'}",
        flush=True,
    )
    if args.via_service:
        try:
            via_service(args, url)
        finally:
            server.terminate()
            server.wait(10)
        return
    header = (
        f"{'mode':<13}{'N':>5}{'runs':>6}{'runs/s':>8}{'ideal':>6}{'cpu%':>5}{'run/cpu-s':>10}"
        f"{'CPU/step':>9}{'framework':>10}{'client/call':>12}{'p50 add':>9}{'p99 add':>9}"
        f"{'fw p99':>8}{'peak RSS':>9}{'base':>6}"
    )
    print(header)
    print("-" * len(header), flush=True)
    try:
        for mode in args.modes:
            for n in args.sizes:
                real = run_child(args, mode, "openai", n, url, server.pid)
                noop = run_child(args, mode, "noop", n, url, server.pid)
                client = (real["cpu_s"] / real["runs"] - noop["cpu_s"] / noop["runs"]) / (
                    MODEL_CALLS_PER_SESSION
                )
                results.append({"openai": real, "noop": noop, "client_per_call_us": client * 1e6})
                print(
                    f"{mode:<13}{n:>5}{real['runs']:>6}{real['runs_per_s']:>8.1f}"
                    f"{n / (2 * DELAY):>6.0f}{real['cpu_share'] * 100:>5.0f}"
                    f"{real['runs'] / real['cpu_s']:>10.0f}"
                    f"{real['cpu_per_step_us']:>7.0f}us{noop['cpu_per_step_us']:>8.0f}us"
                    f"{client * 1e6:>10.0f}us{real['p50_added_ms']:>7.0f}ms"
                    f"{real['p99_added_ms']:>7.0f}ms{noop['p99_added_ms']:>6.0f}ms"
                    f"{real['peak_rss_mb']:>7.0f}MB{real['base_rss_mb']:>4.0f}MB",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(10)
    print(
        "\ncpu%: CPU time of the bench process / wall time (100 = one core); run/cpu-s: runs "
        "per CPU-second, the throughput one core would sustain. CPU/step: bench-process CPU per "
        "step (2 model calls + 1 tool call per run) with the real OpenAI client; framework: the "
        "same against a no-op model; client/call: the difference per model call. p50/p99 add: "
        "run wall time minus 400 ms of server sleep (fw p99: against the no-op model)."
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
