"""The launcher that runs inside each sandbox: waits for one job, runs it once, reports back.

It is started by bubblewrap (``python3 -I -S -c <this file> RESULT_FD``) before any job exists, so
a warm sandbox has its interpreter loaded already. It reads one JSON job from stdin, writes the
job's files into the workspace, forks the program (Python code runs in the forked interpreter,
shell code is exec'd by ``/bin/sh``) under the job's rlimits, waits, and writes one report (exit
status, CPU time, files created or changed; framed as ``keel.sandbox.pipes`` reads it) to
RESULT_FD. The job comes as ``marshal`` data (from the trusted host; format 4, readable by any
Python 3.4+). Only modules built into the interpreter or tiny are imported up front: the
launcher's start-up is part of every cold start. Nothing it reports is trusted by the host.
"""

# os.path rather than pathlib: the launcher's import time is part of every cold start.
# ruff: noqa: PTH103, PTH112, PTH113, PTH114, PTH118, PTH120, PTH123

from __future__ import annotations

import atexit
import gc
import marshal
import os
import resource
import site
import sys
import types

TYPE_CHECKING = False  # typing itself costs milliseconds to import
if TYPE_CHECKING:
    import socket
    from typing import Any

WORKSPACE = "/workspace"
SCRIPT = "/tmp/.keel/main.py"
PROXY_SOCKET = "/run/keel/proxy.sock"
PROXY_PORT = 3128


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_files(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = os.path.join(WORKSPACE, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _scan() -> dict[str, tuple[int, int]]:
    seen: dict[str, tuple[int, int]] = {}
    for root, _dirs, names in os.walk(WORKSPACE):
        for name in names:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if os.path.isfile(path) and not os.path.islink(path):
                seen[os.path.relpath(path, WORKSPACE)] = (st.st_size, st.st_mtime_ns)
    return seen


def _collect(before: dict[str, tuple[int, int]], budget: int) -> tuple[dict[str, bytes], bool]:
    out: dict[str, bytes] = {}
    truncated = False
    for rel, stamp in sorted(_scan().items()):
        if before.get(rel) == stamp:
            continue
        if stamp[0] > budget:
            truncated = True
            continue
        try:
            with open(os.path.join(WORKSPACE, rel), "rb") as f:
                data = f.read(budget + 1)
        except OSError:
            continue
        if len(data) > budget:
            truncated = True
            continue
        budget -= len(data)
        out[rel] = data
    return out, truncated


def _relay(a: socket.socket, b: socket.socket) -> None:
    import contextlib
    import socket

    try:
        while True:
            data = a.recv(1 << 16)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _serve_proxy() -> None:
    """Forward 127.0.0.1:PROXY_PORT inside the sandbox to the host's allow-list proxy socket."""
    import socket
    import threading

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", PROXY_PORT))
    listener.listen(16)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(PROXY_SOCKET)
            except OSError:
                conn.close()
                continue
            for pair in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_relay, args=pair, daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def _limit(kind: int, value: int | None) -> None:
    if value is not None:
        resource.setrlimit(kind, (value, value))


def _python_paths() -> None:
    """What ``site`` would give the program, without running any ``.pth`` file's code.

    The launcher runs with ``-S`` so that start-up stays fast and no hook installed on the
    host runs inside the sandbox; the program still gets ``exit``/``quit``/``help`` and the
    system's site-packages on its path, after the workspace.
    """
    site.setquit()
    site.setcopyright()
    site.sethelper()
    version = "python{}.{}".format(*sys.version_info[:2])
    sys.path.insert(0, WORKSPACE)
    for path in (
        f"/usr/local/lib/{version}/dist-packages",
        "/usr/lib/python3/dist-packages",
        f"/usr/lib/{version}/dist-packages",
        f"{sys.prefix}/lib/{version}/site-packages",
    ):
        if os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)


def _enter_child(job: dict[str, Any], result_fd: int) -> types.CodeType | None:
    """Set up the forked child; exec shell code, or return the Python code to run."""
    os.close(result_fd)
    rl = job["rlimits"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (rl["cpu"], rl["cpu"] + 1))
    _limit(resource.RLIMIT_NOFILE, rl["nofile"])
    _limit(resource.RLIMIT_FSIZE, rl["fsize"])
    _limit(resource.RLIMIT_NPROC, rl["nproc"])
    _limit(resource.RLIMIT_AS, rl["as"])
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the program, not the launcher, is what an OOM kill should take
    except OSError:
        pass
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(WORKSPACE)
    if job["runtime"] == "shell":
        import signal

        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        os.execve("/bin/sh", ["sh", "-c", job["code"]], dict(os.environ))
    os.makedirs(os.path.dirname(SCRIPT), exist_ok=True)
    with open(SCRIPT, "w", encoding="utf-8") as f:
        f.write(job["code"])
    sys.argv = [SCRIPT]
    _python_paths()
    return compile(job["code"], SCRIPT, "exec")


def _report(pid: int, job: dict[str, Any], before: dict[str, tuple[int, int]], fd: int) -> None:
    _, status = os.waitpid(pid, 0)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    files, truncated = _collect(before, job["files_out_bytes"])
    cpu_us = int((usage.ru_utime + usage.ru_stime) * 1e6)
    parts = [b"%d %d %d %d %d\n" % (status, cpu_us, usage.ru_maxrss, truncated, len(files))]
    for name, data in files.items():
        encoded = name.encode("utf-8", "surrogateescape")
        parts += [b"%d %d\n" % (len(encoded), len(data)), encoded, data]
    # Framed, so the host knows when the report is complete without waiting for an exit.
    view = memoryview(b"".join(parts))
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)


def main(result_fd: int) -> types.CodeType | None:
    """Run one job; in the forked child, return the Python code object to execute."""
    job = marshal.loads(_read_all(0))
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _write_files(job["files"])
    before = _scan()
    if job["proxy"]:
        _serve_proxy()
    sys.stdout.flush()
    gc.freeze()  # fewer copy-on-write faults in the child
    pid = os.fork()
    if pid == 0:
        return _enter_child(job, result_fd)
    _report(pid, job, before, result_fd)
    os._exit(0)


def _exit_status(code: object) -> int:
    """What the interpreter would exit with for ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run_program(code: types.CodeType) -> None:
    """Run the program as ``__main__``, then exit the way the interpreter would, but faster.

    A normal interpreter shutdown of the forked launcher costs ~10 ms of teardown; the program
    gets what it can observe of one (non-daemon threads joined, atexit handlers, flushed
    output, the same exit status) and the process then ends with ``os._exit``.
    """
    module = types.ModuleType("__main__")
    module.__file__ = SCRIPT
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
        status = 0
    except SystemExit as e:
        status = _exit_status(e.code)
    except BaseException as e:
        # Drop the launcher's own frame so the traceback shows only the program's lines.
        import traceback

        tb = e.__traceback__
        traceback.print_exception(type(e), e, tb.tb_next if tb is not None else None)
        status = 1
    try:
        threading = sys.modules.get("threading")  # loaded only if the program has threads
        if threading is not None:
            threading._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as e:
        status = _exit_status(e.code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = 120
    os._exit(status)


if __name__ == "__main__":
    os.write(int(sys.argv[1]), b"ready\n")
    _code = main(int(sys.argv[1]))
    if _code is not None:
        _run_program(_code)
