"""Runs survive the service being killed (SIGKILL) or stopped (SIGTERM): a real ``keel serve``
process resumes them from their last checkpoint, and a side effect already done is not redone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from conftest import free_port

HERE = Path(__file__).parent


class Server:
    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.config = tmp / "keel.toml"
        self.counter = tmp / "effects.txt"
        self.gate = tmp / "gate"
        self.config.write_text(
            "[serve]\ndocs_agent = false\n\n[serve.agents.blocker]\n"
            'kind = "graph:serve_blocking_graph:build"\n'
        )
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "SERVE_TEST_COUNTER": str(self.counter),
            "SERVE_TEST_GATE": str(self.gate),
        }
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.key = self.keel("serve", "keys", "create", "--tenant", "acme").stdout.strip()

    def keel(self, *args: str) -> subprocess.CompletedProcess[str]:
        common = ["--data-dir", str(self.data), "--config", str(self.config)]
        done = subprocess.run(
            [sys.executable, "-m", "keel.cli", *args, *common],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "serve", "--port", str(self.port),
             "--data-dir", str(self.data), "--config", str(self.config)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.process.stderr.read()  # type: ignore[union-attr]
            try:
                if httpx2.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "keel serve did not start"
            time.sleep(0.1)

    def stop(self, sig: signal.Signals) -> str:
        """Send ``sig``; return what the server said on stderr."""
        assert self.process is not None
        self.process.send_signal(sig)
        _, said = self.process.communicate(timeout=30)
        self.process = None
        return said.decode()

    def request(self, method: str, path: str, **kwargs: object) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx2.request(method, f"{self.base}{path}", headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]

    def wait_for(self, what: str, check: object, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def effects(self) -> list[str]:
        return self.counter.read_text().splitlines() if self.counter.exists() else []


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    if s.process is not None:
        s.process.kill()
        s.process.wait()


def test_a_run_survives_sigkill_and_sigterm_without_repeating_its_side_effect(
    server: Server,
) -> None:
    server.start()
    r = server.request("POST", "/v1/runs", json={"agent": "blocker", "input": {"input": "job"}})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    server.wait_for("the side effect", lambda: len(server.effects()) == 1)
    assert "stopped" not in server.stop(signal.SIGKILL)  # killed mid-run: no clean-up

    server.start()  # finds the run and resumes it from its checkpoint
    server.wait_for(
        "the resumed run",
        lambda: any(
            e.get("data", {}) == {"run_id": run_id, "resumed": True}
            for e in events(server, run_id, stop_at_resume=True)
        ),
    )
    assert server.request("GET", f"/v1/runs/{run_id}").json()["status"] == "running"
    said = server.stop(signal.SIGTERM)  # graceful: the run stays resumable
    assert "resumed 1 run(s)" in said and "stopped; 1 run(s) will resume" in said

    server.start()
    assert server.request("GET", f"/v1/runs/{run_id}").json()["status"] == "running"
    server.gate.touch()
    server.wait_for(
        "the run to finish",
        lambda: server.request("GET", f"/v1/runs/{run_id}").json()["status"] == "done",
    )
    run = server.request("GET", f"/v1/runs/{run_id}").json()
    assert run["output"] == "job: the effect ran 1 time(s)"
    assert server.effects() == [f"{run_id}:1/work#0/effect0"]  # exactly once, across 3 processes
    assert len(run["trace_ids"]) == 3  # one trace per process that drove it
    assert "stopped; 0 run(s)" in server.stop(signal.SIGTERM)


def events(server: Server, run_id: str, *, stop_at_resume: bool) -> list[dict[str, object]]:
    """The run's stored events so far (read with ``after`` paging, not waiting for the end)."""
    import json

    found: list[dict[str, object]] = []
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx2.stream(
        "GET", f"{server.base}/v1/runs/{run_id}/events", headers=headers, timeout=10
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
                if stop_at_resume and found[-1].get("data", {}) == {
                    "run_id": run_id,
                    "resumed": True,
                }:
                    break
            if line.startswith(": keep-alive"):
                break
    return found
