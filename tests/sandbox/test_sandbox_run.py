"""The sandbox contract: output, exit codes, files in and out, environment, the warm pool."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from sandbox_probes import FAST, existing
from typer.testing import CliRunner

from keel.errors import (
    MissingDependencyError,
    SandboxError,
    SandboxInputError,
    SandboxUnavailableError,
)
from keel.sandbox import BubblewrapSandbox, Limit, Sandbox, WarmPool
from keel.sandbox.cli import app as sandbox_app


async def test_python_output_and_exit_code(sandbox: Sandbox) -> None:
    assert isinstance(sandbox, Sandbox)
    result = await sandbox.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nexit(7)")
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 7)
    assert result.limit is None and not result.ok


async def test_death_by_signal_is_128_plus_the_signal(sandbox: Sandbox) -> None:
    result = await sandbox.run("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert (result.exit_code, result.limit) == (143, None)


async def test_shell_runtime(sandbox: Sandbox) -> None:
    result = await sandbox.run("echo $HOME; pwd; id -u; exit 3", runtime="shell")
    assert result.stdout_text.split() == ["/workspace", "/workspace", "65534"]
    assert result.exit_code == 3


async def test_uncaught_exception_shows_only_the_programs_traceback(
    sandbox: Sandbox,
) -> None:
    result = await sandbox.run("def f():\n    raise ValueError('boom')\nf()")
    assert result.exit_code == 1
    assert result.stderr_text.splitlines()[-1] == "ValueError: boom"
    assert "<string>" not in result.stderr_text  # no launcher frame
    message = await sandbox.run("import sys; sys.exit('bad input')")
    assert (message.exit_code, message.stderr_text) == (1, "bad input\n")


async def test_threads_and_atexit_finish_before_exit(sandbox: Sandbox) -> None:
    code = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit'))\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread'))).start()\n"
        "print('main', end='\\n', flush=False)"
    )
    result = await sandbox.run(code)
    assert result.stdout_text.split() == ["main", "thread", "atexit"]


async def test_files_in_and_out(sandbox: Sandbox) -> None:
    code = (
        "import json\n"
        "data = json.load(open('in/data.json'))\n"
        "open('in/data.json', 'w').write(json.dumps(data * 2))\n"
        "import os; os.makedirs('out', exist_ok=True)\n"
        "open('out/total.txt', 'w').write(str(sum(data)))\n"
    )
    result = await sandbox.run(code, files={"in/data.json": b"[1, 2, 3]", "untouched.txt": b"same"})
    assert result.ok, result.stderr_text
    assert result.files_out == {"in/data.json": b"[1, 2, 3, 1, 2, 3]", "out/total.txt": b"6"}
    assert not result.files_truncated


async def test_files_out_are_bounded(sandbox: Sandbox) -> None:
    result = await sandbox.run(
        "open('small', 'wb').write(b'x' * 100); open('big', 'wb').write(b'x' * 5000)",
        limits=FAST.model_copy(update={"files_out_bytes": 1000}),
    )
    assert set(result.files_out) == {"small"}
    assert result.files_truncated


@pytest.mark.parametrize("name", ["/etc/passwd", "../up", "a/../../up", "", ".", "a\0b"])
async def test_file_names_must_stay_in_the_workspace(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(SandboxInputError, match="invalid workspace file name"):
        await sandbox.run("pass", files={name: b"x"})


async def test_environment_is_only_what_is_given(sandbox: Sandbox) -> None:
    result = await sandbox.run(
        "import os, json; print(json.dumps(dict(os.environ)))", env={"TOKEN": "given"}
    )
    env = __import__("json").loads(result.stdout)
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/workspace",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "USER": "sandbox",
        "TOKEN": "given",
    }


def test_missing_bubblewrap_names_the_package() -> None:
    with pytest.raises(SandboxUnavailableError) as info:
        BubblewrapSandbox(bwrap="/nonexistent/bwrap")
    assert "apt-get install bubblewrap" in str(info.value)


def test_seccomp_without_pyseccomp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.sandbox import seccomp

    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # as if it were not installed
    seccomp.compile_filter.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match=r"keel\[sandbox\]"):
            BubblewrapSandbox(seccomp=True)
        assert BubblewrapSandbox().seccomp is False  # by default: used when available
    finally:
        seccomp.compile_filter.cache_clear()


@pytest.fixture
def failing_bwrap() -> Iterator[str]:
    """A stand-in for bwrap that fails the way it does without user namespaces."""
    place = Path(tempfile.mkdtemp(prefix="keel-fake-bwrap-"))
    place.chmod(0o755)  # the sandbox's uid must be able to run it
    fake = place / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\n")
    fake.chmod(0o755)
    yield str(fake)
    shutil.rmtree(place)


async def test_a_sandbox_that_cannot_start_says_why(failing_bwrap: str) -> None:
    with pytest.raises(SandboxError, match="did not start: bwrap: No permissions"):
        await BubblewrapSandbox(bwrap=failing_bwrap).run("print(1)")


# --- warm pool -------------------------------------------------------------------------------


async def test_pool_runs_each_job_in_a_fresh_sandbox(backend: BubblewrapSandbox) -> None:
    async with WarmPool(backend, size=2) as pool:
        assert pool.ready == 2
        first = await pool.run("import os; open('/tmp/mark', 'w').write('x'); print(os.getppid())")
        second = await pool.run("import os; print(os.path.exists('/tmp/mark'))")
        assert first.ok and second.stdout_text == "False\n"
        results = await asyncio.gather(*(pool.run(f"print({i})") for i in range(5)))
        assert [r.stdout_text for r in results] == [f"{i}\n" for i in range(5)]
        await asyncio.sleep(0)  # let the refill start
        await pool.fill()
        assert pool.ready == 2
        assert isinstance(pool, Sandbox)
        # Network access is fixed when a sandbox starts: such a run starts its own.
        netted = await pool.run("print('cold')", allow_net=["example.com:443"])
        assert netted.stdout_text == "cold\n" and pool.ready == 2


async def test_pool_close_leaves_no_process(backend: BubblewrapSandbox) -> None:
    pool = WarmPool(backend, size=2)
    await pool.fill()
    pids = [instance.proc.pid for instance in pool._ready]
    await pool.close()
    assert existing(*(f"/proc/{pid}" for pid in pids)) == []
    assert pool.ready == 0


async def test_pool_refills_between_runs_not_during_them(backend: BubblewrapSandbox) -> None:
    async with WarmPool(backend, size=2) as pool:
        await pool.run("print(1)")  # leaves a background refill pending
        await pool.fill()

        async def ready_during_run() -> int:
            await asyncio.sleep(0.2)
            return pool.ready

        watcher = asyncio.create_task(ready_during_run())
        slow = await pool.run("import time; time.sleep(0.4); print('done')")
        # A started sandbox still waited for the next run: the refill did not compete.
        assert slow.stdout_text == "done\n" and await watcher == 1
        assert pool._filling is not None
        await pool._filling
        assert pool.ready == 2


async def test_used_instance_is_never_reused(backend: BubblewrapSandbox) -> None:
    instance = await backend.start(disk_mb=FAST.disk_mb)
    await instance.execute("print(1)", runtime="python", files={}, limits=FAST, env=None)
    with pytest.raises(Exception, match="one job only"):
        await instance.execute("print(2)", runtime="python", files={}, limits=FAST, env=None)


# --- network allow-list ----------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[int]:
    """A real HTTP server on the host's loopback, answering 'hello from the host'."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the host"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


FETCH = """
import urllib.request, urllib.error, socket
for url in {urls!r}:
    try:
        print(urllib.request.urlopen(url, timeout=5).read().decode())
    except urllib.error.HTTPError as e:
        print("HTTP", e.code)
    except OSError as e:
        print("ERROR")
s = socket.socket()
print("direct", s.connect_ex(("127.0.0.1", {port})) != 0)
"""


async def test_allow_list_opens_only_the_listed_host(sandbox: Sandbox, http_server: int) -> None:
    urls = [f"http://127.0.0.1:{http_server}/", f"http://localhost:{http_server}/"]
    code = FETCH.format(urls=urls, port=http_server)
    allowed = await sandbox.run(code, allow_net=[f"127.0.0.1:{http_server}"])
    assert allowed.stdout_text.splitlines() == ["hello from the host", "HTTP 403", "direct True"]
    closed = await sandbox.run(code)
    assert closed.stdout_text.splitlines() == ["ERROR", "ERROR", "direct True"]


CONNECT = """
import socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
s.sendall(b"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n")
reply = s.recv(4096)
print(reply.split(b"\\r\\n")[0].decode())
if b" 200 " in reply:
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.split(b"\\r\\n\\r\\n", 1)[1].decode())
"""


async def test_allow_list_tunnels_any_tcp_with_connect(sandbox: Sandbox, http_server: int) -> None:
    allowed = f"127.0.0.1:{http_server}"
    result = await sandbox.run(CONNECT.format(target=allowed), allow_net=[allowed])
    assert result.stdout_text.splitlines() == [
        "HTTP/1.1 200 Connection established",
        "hello from the host",
    ], result.stderr_text
    denied = await sandbox.run(CONNECT.format(target="127.0.0.1:1"), allow_net=[allowed])
    assert denied.stdout_text.splitlines() == ["HTTP/1.1 403 Forbidden"], denied.stderr_text


def test_allow_list_rejects_malformed_entries() -> None:
    from keel.sandbox.netproxy import AllowList

    with pytest.raises(SandboxInputError, match="allow-list"):
        AllowList(["http://example.com/path"])
    rules = AllowList(["*.example.com", "pypi.org:443"])
    assert rules.allows("files.example.com", 80)
    assert rules.allows("PyPI.org", 443)
    assert not rules.allows("pypi.org", 80)
    assert not rules.allows("example.com.evil.net", 443)


# --- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """Test root, as ``keel`` mounts the sandbox app."""

    root.add_typer(sandbox_app, name="sandbox")
    return root


def test_cli_prints_output_and_exits_with_the_programs_code(
    cli: typer.Typer, tmp_path: Path
) -> None:
    (tmp_path / "data.txt").write_text("42")
    script = tmp_path / "script.py"
    script.write_text(
        "n = int(open('data.txt').read())\nopen('twice.txt', 'w').write(str(2 * n))\n"
        "print(n)\nraise SystemExit(5)"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "sandbox",
            "run",
            "--file",
            str(script),
            "--in",
            str(tmp_path / "data.txt"),
            "--out",
            str(out),
        ],
    )
    assert (result.exit_code, result.stdout) == (5, "42\n")
    assert (out / "twice.txt").read_text() == "84"


def test_cli_reports_a_limit_with_its_code(cli: typer.Typer) -> None:
    result = CliRunner().invoke(
        cli, ["sandbox", "run", "--shell", "--timeout", "1", "echo started; sleep 30"]
    )
    assert result.exit_code == 124
    assert result.stdout == "started\n"
    assert "error: sandbox: wall time limit exceeded, run killed" in result.stderr


def test_cli_rejects_bad_input_in_one_line(cli: typer.Typer) -> None:
    both = CliRunner().invoke(cli, ["sandbox", "run", "print(1)", "--file", "x.py"])
    assert both.exit_code == 1 and "error:" in both.stderr
    bad = CliRunner().invoke(cli, ["sandbox", "run", "--memory", "1", "print(1)"])
    assert bad.exit_code == 1 and "memory_mb" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_limit_enum_values_are_stable() -> None:
    assert [limit.value for limit in Limit] == [
        "wall_time",
        "cpu_time",
        "memory",
        "output",
        "file_size",
    ]
