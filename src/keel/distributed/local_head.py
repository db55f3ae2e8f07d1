"""``LocalRayHead``: a real Ray head on 127.0.0.1, started and stopped by this process.

For tests, benchmarks and trying ``RayExecutor`` on one machine. It runs ``ray start --head
--block`` in its own session with a private temp dir, waits until the head is up, and on ``stop``
ends exactly the processes it started: the head's process group and every descendant (Ray's
workers call ``setsid``, so the group alone misses them). It never runs ``ray stop``, which ends
every Ray process on the machine. Set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in this process
before Ray is imported so that the driver, like the head, stays on loopback, and
``RAY_AUTH_MODE=disabled`` (the head's default) so that a ``~/.ray/auth_token`` file does not turn
token authentication on in the driver alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from keel.errors import ExecutorError

__all__ = ["LocalRayHead"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, from /proc (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class LocalRayHead:
    """A loopback Ray head with ``num_cpus`` CPUs; ``address`` (GCS) and ``client_address``
    (``ray://``) once started. Use as a context manager, or call ``start`` and ``stop``."""

    def __init__(
        self,
        num_cpus: int = 2,
        *,
        extra_env: dict[str, str] | None = None,
        startup_timeout_s: float = 120,
    ) -> None:
        self.num_cpus = num_cpus
        self.extra_env = dict(extra_env or {})
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.client_port = 0
        self.temp_dir = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def env(self) -> dict[str, str]:
        """The environment the head runs with (loopback, and ``extra_env``); give it to drivers
        too. Token authentication is off unless ``RAY_AUTH_MODE`` says otherwise: Ray turns it on
        by itself when ``~/.ray/auth_token`` exists, and a driver that does not then fails with
        ``InvalidAuthToken``."""
        auth = os.environ.get("RAY_AUTH_MODE", "disabled")
        return {
            **os.environ,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": auth,
            **self.extra_env,
        }

    def start(self) -> Self:
        ray = Path(sys.executable).with_name("ray")
        if not ray.exists():
            raise ExecutorError(
                "the `ray` command is not installed", hint="pip install 'keel[ray]'"
            )
        # Ray's socket paths must stay short: a temp dir directly under /tmp.
        self.temp_dir = tempfile.mkdtemp(prefix="keelray-", dir="/tmp")
        self.port, self.client_port = _free_port(), _free_port()
        log = Path(self.temp_dir) / "head.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    str(ray), "start", "--head", "--block", f"--port={self.port}",
                    "--node-ip-address=127.0.0.1",
                    f"--ray-client-server-port={self.client_port}",
                    f"--num-cpus={self.num_cpus}", "--include-dashboard=false",
                    "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
                ],
                stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline and self._proc.poll() is None:
            if b"block forever" in log.read_bytes():
                return self
            time.sleep(0.25)
        tail = log.read_text(errors="replace")[-2000:]
        self.stop()
        raise ExecutorError(f"the local Ray head did not start:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the head's group and every process it started."""
        proc, self._proc = self._proc, None
        if proc is not None:
            pids = _descendants(proc.pid)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in [proc.pid, *pids]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=3)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
