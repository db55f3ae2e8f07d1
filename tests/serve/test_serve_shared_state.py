"""Two real ``keel serve`` processes on loopback, one config file, state shared in a real
PostgreSQL and a real Redis: a key made once works on both, a run started on one is read and
streamed from the other, answered through the other, and resumed by the other when its process
is killed, with its side effect done exactly once; tenants stay apart across processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import free_port

from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian package redis-server; see Makefile)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "no redis-server"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


class Cluster:
    """The shared config, and ``keel serve`` processes started from it on loopback ports."""

    def __init__(self, tmp: Path, pg: PostgresServer, redis_url: str) -> None:
        pg.create_database("keel_shared", extensions=["vector"])
        self.tmp = tmp
        self.counter = tmp / "effects.txt"
        self.gate = tmp / "gate"
        self.config = tmp / "keel.toml"
        self.config.write_text(
            "[shared]\n"
            f'dsn = "{pg.conninfo("keel_shared", password=False)}"\n'
            f'redis_url = "{redis_url}"\n\n'
            "[serve]\ndocs_agent = false\nlease_s = 2.0\nkeepalive_s = 0.5\n\n"
            '[serve.agents.blocker]\nkind = "graph:serve_blocking_graph:build"\n\n'
            '[serve.agents.approval]\nkind = "graph:serve_shared_graphs:approval"\n'
        )
        self.env = {
            **os.environ,
            "PGPASSWORD": pg.password,  # the config holds no password
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "SERVE_TEST_COUNTER": str(self.counter),
            "SERVE_TEST_GATE": str(self.gate),
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    def keel(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "keel.cli", *args, "--config", str(self.config),
             "--data-dir", str(self.tmp / "cli")],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def spawn(self, name: str) -> tuple[subprocess.Popen[bytes], str]:
        """Start a process with its own data dir (nothing is shared through files)."""
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "serve", "--port", str(port),
             "--config", str(self.config), "--data-dir", str(self.tmp / name)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=(self.tmp / f"{name}.log").open("wb"),
        )  # fmt: skip
        self.processes.append(process)
        return process, f"http://127.0.0.1:{port}"

    def wait_up(self, process: subprocess.Popen[bytes], base: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(self.logs())
            try:
                if httpx2.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "keel serve did not start"
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"{p.name}: {p.read_text()}" for p in sorted(self.tmp.glob("*.log")))

    def effects(self) -> list[str]:
        return self.counter.read_text().splitlines() if self.counter.exists() else []


@pytest.fixture
def cluster(
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
    redis_url: str,
) -> Iterator[Cluster]:
    made = Cluster(tmp_path, postgres_server, redis_url)
    yield made
    for process in made.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def call(base: str, key: str, method: str, path: str, **kwargs: Any) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx2.request(method, f"{base}{path}", headers=headers, timeout=10, **kwargs)


def stream(
    base: str, key: str, run_id: str, until: Callable[[dict[str, Any]], bool] | None = None
) -> list[dict[str, Any]]:
    """SSE messages of a run (``{"event", "data"}``) until the stream ends or ``until`` holds."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {key}"}
    with httpx2.stream("GET", f"{base}/v1/runs/{run_id}/events", headers=headers, timeout=30) as r:
        assert r.status_code == 200, r.read()
        event = ""
        for line in r.iter_lines():
            assert time.monotonic() < deadline, f"the stream did not end: {found}"
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                found.append({"event": event, "data": json.loads(line[6:])})
                if until is not None and until(found[-1]):
                    break
    return found


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_processes_share_keys_runs_events_interrupts_and_leases(cluster: Cluster) -> None:
    acme = cluster.keel("serve", "keys", "create", "--tenant", "acme")
    globex = cluster.keel("serve", "keys", "create", "--tenant", "globex")
    a, base_a = cluster.spawn("a")
    b, base_b = cluster.spawn("b")
    cluster.wait_up(a, base_a)
    cluster.wait_up(b, base_b)
    said = " ".join((cluster.tmp / "a.log").read_text().split())  # the console wraps lines
    assert "(schema keel, shared)" in said and cluster.env["PGPASSWORD"] not in said
    for base in (base_a, base_b):  # one key store: the key made once works on both
        assert call(base, acme, "GET", "/v1/runs").status_code == 200
        assert call(base, "keel_nothere_x", "GET", "/v1/runs").status_code == 401

    # An interrupt asked in A, seen and answered through B; the run then finishes.
    r = call(base_a, acme, "POST", "/v1/runs", json={"agent": "approval", "input": "deploy"})
    assert r.status_code == 201, r.text
    asked = r.json()["id"]
    messages = stream(base_b, acme, asked)  # ends when the run waits for input
    assert messages[-1] == {"event": "end", "data": {"status": "interrupted"}}
    assert any(m["event"] == "interrupt" for m in messages)
    run = call(base_b, acme, "GET", f"/v1/runs/{asked}").json()
    (pending,) = run["interrupts"]
    assert pending["value"] == {"question": "may I deploy?"}
    answer = {"approved": True}
    r = call(base_b, acme, "POST", f"/v1/runs/{asked}/interrupts/{pending['id']}", json=answer)
    assert r.status_code == 200, r.text
    again = call(base_a, acme, "POST", f"/v1/runs/{asked}/interrupts/{pending['id']}", json=answer)
    assert again.status_code == 409  # answered once, whichever process is asked
    assert stream(base_a, acme, asked)[-1]["data"] == {"status": "done"}
    done = call(base_a, acme, "GET", f"/v1/runs/{asked}").json()
    assert done["output"] == "deploy: approved"
    first, second = done["trace_ids"]  # A drove it up to the question, B after the answer
    for base, trace_id in ((base_b, first), (base_a, second)):  # one trace store
        spans = call(base, acme, "GET", f"/v1/traces/{trace_id}").json()["spans"]
        assert any(span["name"] == "keel.serve.run approval" for span in spans)
    assert call(base_b, globex, "GET", f"/v1/traces/{first}").status_code == 404

    # A run driven by A, cancelled through B: A stops driving it at its next lease renewal.
    r = call(base_a, acme, "POST", "/v1/runs", json={"agent": "blocker", "input": {"input": "x"}})
    doomed = r.json()["id"]
    wait_for("the doomed run's effect", lambda: len(cluster.effects()) == 1)
    assert call(base_b, acme, "POST", f"/v1/runs/{doomed}/cancel").json()["status"] == "cancelled"
    wait_for("A to drop it", lambda: httpx2.get(f"{base_a}/healthz").json()["runs_active"] == 0)
    assert call(base_a, acme, "GET", f"/v1/runs/{doomed}").json()["status"] == "cancelled"
    assert stream(base_a, acme, doomed)[-1]["data"] == {"status": "cancelled"}

    # A run driven by A streams live through B; A is killed; B takes the run over.
    r = call(base_a, acme, "POST", "/v1/runs", json={"agent": "blocker", "input": {"input": "job"}})
    assert r.status_code == 201, r.text
    job = r.json()["id"]
    progress = {"name": "progress", "data": "waiting for the gate"}
    live = stream(base_b, acme, job, until=lambda m: m["data"].get("data") == progress)
    assert live[-1]["event"] == "custom"  # emitted in A, read live in B
    assert cluster.effects()[1:] == [f"{job}:1/work#0/effect0"]

    resumed: list[list[dict[str, Any]]] = []
    watcher = threading.Thread(
        target=lambda: resumed.append(
            stream(base_b, acme, job, until=lambda m: m["data"].get("data") == {
                "run_id": job, "resumed": True})
        ),
        daemon=True,
    )  # fmt: skip
    watcher.start()  # a client of B, attached before A dies, sees the take-over as it happens
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=10)
    watcher.join(timeout=30)
    assert resumed and resumed[0][-1]["data"]["data"] == {"run_id": job, "resumed": True}
    assert call(base_b, acme, "GET", f"/v1/runs/{job}").json()["status"] == "running"
    cluster.gate.touch()
    wait_for(
        "the run to finish in B",
        lambda: call(base_b, acme, "GET", f"/v1/runs/{job}").json()["status"] == "done",
    )
    run = call(base_b, acme, "GET", f"/v1/runs/{job}").json()
    # the journalled result of the one execution (the file's 2nd line, after the cancelled run's)
    assert run["output"] == "job: the effect ran 2 time(s)"
    assert cluster.effects()[1:] == [f"{job}:1/work#0/effect0"]  # exactly once, across processes
    assert len(run["trace_ids"]) == 2  # one trace per process that drove it

    # Tenants stay apart across processes: globex sees nothing of acme's, anywhere.
    for run_id in (asked, doomed, job):
        assert call(base_b, globex, "GET", f"/v1/runs/{run_id}").status_code == 404
        assert call(base_b, globex, "GET", f"/v1/runs/{run_id}/events").status_code == 404
        path = f"/v1/runs/{run_id}/interrupts/x"
        assert call(base_b, globex, "POST", path, json=answer).status_code == 404
    assert call(base_b, globex, "GET", "/v1/runs").json()["data"] == []
    assert {r["id"] for r in call(base_b, acme, "GET", "/v1/runs").json()["data"]} == {
        asked,
        doomed,
        job,
    }


async def test_the_same_config_points_memory_budgets_and_cache_at_the_servers(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.budget.wiring import open_ledger
    from keel.cache.factory import open_cache_backend
    from keel.config import load_settings
    from keel.memory.base import VectorRecord
    from keel.memory.factory import create_vector_store

    monkeypatch.setenv("PGPASSWORD", cluster.env["PGPASSWORD"])
    settings = load_settings(config_file=cluster.config, environ={})
    one = create_vector_store(cluster.tmp / "a.db", 4, settings.memory)
    two = create_vector_store(cluster.tmp / "b.db", 4, settings.memory)  # another "process"
    try:
        await one.upsert("acme:docs", [VectorRecord(id="d1", vector=[1, 0, 0, 0], text="hi")])
        assert await two.count("acme:docs") == 1
        (hit,) = await two.query("acme:docs", [1, 0, 0, 0], 1)
        assert hit.id == "d1"
    finally:
        await one.close()
        await two.close()
    ledger = open_ledger(settings)
    try:
        assert type(ledger).__name__ == "RedisBudgetLedger"
        # a real round trip to the shared redis-server, which holds the served runs' budgets
        scopes = await ledger.scopes()
        assert all(key.startswith(("run:", "tenant:")) for key in scopes), scopes
    finally:
        await ledger.aclose()
    cache = open_cache_backend(settings)
    assert type(cache).__name__ == "RedisCacheBackend"
    try:
        assert await cache.get("default", "absent") is None
    finally:
        await cache.close()
