"""The local Linux backend: bubblewrap namespaces, a seccomp filter, rlimits and cgroups.

Each run gets its own user, PID, network, IPC, UTS and cgroup namespaces; a read-only view of
``/usr``; a fresh ``/proc`` and a minimal ``/dev``; and two private size-limited tmpfs mounts,
``/workspace`` (the working directory, holding only the files given) and ``/tmp``. On a root host
bubblewrap itself runs as a fresh unprivileged uid inside fresh memory and pids cgroups. Killing
bubblewrap ends the PID namespace, which takes every process of the run with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import marshal
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from keel.errors import SandboxError, SandboxInputError, SandboxUnavailableError
from keel.sandbox import _launcher
from keel.sandbox.base import (
    EXIT_CODES,
    Limit,
    Limits,
    Result,
    Runtime,
    Usage,
    check_files,
)
from keel.sandbox.cgroup import CgroupV1, cgroups_available
from keel.sandbox.netproxy import AllowList, NetProxy
from keel.sandbox.pipes import LineReader, OutputBudget, Report, pump, read_report, send
from keel.sandbox.seccomp import compile_filter, seccomp_available

__all__ = ["BubblewrapSandbox", "SandboxInstance", "find_bwrap"]

SANDBOX_UID = 65534  # what the program sees as its uid and gid ("nobody")
HOST_UID_BASE = 200_000  # on a root host, each sandbox runs as a fresh uid from this range
HOST_UID_SPAN = 500_000
OVERHEAD_TASKS = 3  # bubblewrap's two processes and the launcher
PROXY_TASKS = 32  # the launcher's proxy threads (two per open connection) when net is allowed
_uids = itertools.count((os.getpid() * 1009) % HOST_UID_SPAN)
START_TIMEOUT_S = 30.0  # a sandbox that is not waiting for its job by then has failed
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/ssl", "/etc/ca-certificates")
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/workspace",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "USER": "sandbox",
}


def find_bwrap(path: str | None = None) -> str:
    """The bubblewrap executable, or a typed error that says how to install it."""
    found = shutil.which(path or "bwrap")
    if found is None:
        raise SandboxUnavailableError(
            f"bubblewrap ({path or 'bwrap'}) is not installed; the sandbox needs it",
            hint="install it with: apt-get install bubblewrap",
        )
    return found


@functools.cache
def _launcher_source() -> str:
    return Path(_launcher.__file__).read_text(encoding="utf-8")


class SandboxInstance:
    """One started sandbox waiting for its job. It runs exactly one job and is then destroyed."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        messages: LineReader,
        cgroup: CgroupV1 | None,
        proxy: NetProxy | None,
        uid_switched: bool,
    ) -> None:
        self.proc = proc
        self._messages = messages
        self._cgroup = cgroup
        self._proxy = proxy
        self._uid_switched = uid_switched
        self._used = False
        self._destroyed = False
        self._oom = False
        self._peak_kb = 0

    async def wait_ready(self) -> None:
        """Wait until the launcher inside waits for its job; a sandbox that fails is destroyed."""
        try:
            ready = await asyncio.wait_for(self._messages.line(64), timeout=START_TIMEOUT_S)
        except TimeoutError:
            ready = None
        if ready == b"ready":
            return
        await self.destroy()
        stderr = b""
        if self.proc.stderr is not None:
            with contextlib.suppress(TimeoutError):
                stderr = await asyncio.wait_for(self.proc.stderr.read(4096), timeout=1)
        detail = stderr.decode("utf-8", "replace").strip().splitlines()
        raise SandboxError(
            "the sandbox did not start" + (f": {detail[0]}" if detail else ""),
            hint="check that this works: bwrap --unshare-all --ro-bind / / true",
        )

    @property
    def alive(self) -> bool:
        """True while the sandbox still waits for its job."""
        return not self._used and self.proc.returncode is None

    async def execute(
        self,
        code: str,
        *,
        runtime: Runtime,
        files: Mapping[str, bytes],
        limits: Limits,
        env: Mapping[str, str] | None,
    ) -> Result:
        """Hand the job over, wait for it under the limits, destroy the sandbox, report."""
        if self._used:
            raise SandboxError("a sandbox instance runs one job only; start a new one")
        self._used = True
        proc = self.proc
        assert proc.stdin is not None
        tasks = limits.processes + OVERHEAD_TASKS + (PROXY_TASKS if self._proxy else 0)
        job = self._job(code, runtime, check_files(files), limits, env, tasks)
        if self._cgroup is not None:
            self._cgroup.set_limits(limits.memory_mb << 20, tasks)
        budget = OutputBudget(limits.output_bytes)
        out_task = asyncio.create_task(pump(proc.stdout, budget))
        err_task = asyncio.create_task(pump(proc.stderr, budget))
        result_task = asyncio.create_task(read_report(self._messages, limits.files_out_bytes))
        overflow_task = asyncio.create_task(budget.exceeded.wait())
        start = time.perf_counter()
        # Handing the job over is inside the wall-clock limit too: a launcher that stops
        # reading cannot hold the host.
        send_task = asyncio.create_task(send(proc.stdin, job))
        try:
            done, _ = await asyncio.wait(
                {result_task, overflow_task},
                timeout=limits.wall_time_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            wall = time.perf_counter() - start
        finally:
            overflow_task.cancel()
            send_task.cancel()
            await self.destroy()
        report: Report | None = None
        if result_task in done and not budget.exceeded.is_set():
            report = result_task.result()
        else:
            result_task.cancel()
        streams = await asyncio.wait_for(asyncio.gather(out_task, err_task), timeout=10)
        return self._result(report, streams, limits, wall, timed_out=not done, overflow=budget)

    def _job(
        self,
        code: str,
        runtime: Runtime,
        files: Mapping[str, bytes],
        limits: Limits,
        env: Mapping[str, str] | None,
        tasks: int,
    ) -> bytes:
        if runtime not in ("python", "shell"):
            raise SandboxInputError(f"unknown runtime {runtime!r}", hint="use 'python' or 'shell'")
        full_env = dict(BASE_ENV)
        if self._proxy is not None:
            url = f"http://127.0.0.1:{_launcher.PROXY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
                full_env[name] = url
        full_env.update(env or {})
        job = {
            "runtime": runtime,
            "code": code,
            "files": dict(files),
            "env": full_env,
            "proxy": self._proxy is not None,
            "files_out_bytes": limits.files_out_bytes,
            "rlimits": {
                "cpu": limits.cpu_time_s,
                "nofile": limits.open_files,
                "fsize": limits.file_size_mb << 20,
                # RLIMIT_NPROC counts per uid: only meaningful when the uid is the sandbox's own.
                "nproc": tasks if self._uid_switched else None,
                # With a memory cgroup the kernel kills at the limit; without, cap address space.
                "as": None if self._cgroup is not None else limits.memory_mb << 20,
            },
        }
        return marshal.dumps(job, 4)

    def _result(
        self,
        report: Report | None,
        streams: Sequence[bytes],
        limits: Limits,
        wall: float,
        *,
        timed_out: bool,
        overflow: OutputBudget,
    ) -> Result:
        try:
            code = os.waitstatus_to_exitcode(report.status) if report else -1
        except ValueError:
            report = None
        if report is None:  # the launcher was killed, or its report was garbled
            code = self.proc.returncode if self.proc.returncode is not None else -signal.SIGKILL
        if code < 0:
            code = 128 - code
        sig = code - 128 if code > 128 else 0
        cpu_s = report.cpu_s if report else 0.0
        limit: Limit | None = None
        if overflow.exceeded.is_set():
            limit = Limit.OUTPUT
        elif timed_out:
            limit = Limit.WALL_TIME
        elif sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits.cpu_time_s):
            limit = Limit.CPU_TIME
        elif sig == signal.SIGXFSZ:
            limit = Limit.FILE_SIZE
        elif self._oom and (sig == signal.SIGKILL or report is None):
            limit = Limit.MEMORY
        files: dict[str, bytes] = {}
        if report is not None:
            with contextlib.suppress(SandboxInputError):
                files = check_files(report.files)
        return Result(
            exit_code=EXIT_CODES[limit] if limit is not None else code,
            stdout=streams[0],
            stderr=streams[1],
            files_out=files,
            usage=Usage(
                wall_time_s=wall,
                cpu_time_s=cpu_s,
                max_rss_kb=max(report.maxrss_kb if report else 0, self._peak_kb),
            ),
            limit=limit,
            timed_out=limit is Limit.WALL_TIME,
            files_truncated=report.truncated if report else limits.files_out_bytes > 0,
        )

    async def destroy(self) -> None:
        """Kill every process of the sandbox and free what it held. Safe to call twice."""
        if self._destroyed:
            return
        self._destroyed = True
        self._used = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._cgroup is not None:
            self._oom = self._cgroup.oom_killed()
            self._peak_kb = self._cgroup.peak_memory_kb()
            self._cgroup.kill_all()
        await self.proc.wait()
        if self._cgroup is not None and not self._cgroup.try_remove():
            await asyncio.to_thread(self._cgroup.destroy)  # tasks still exiting: poll
        self._messages.close()
        if self._proxy is not None:
            await self._proxy.close()


class BubblewrapSandbox:
    """Runs each job in a new bubblewrap sandbox (the default backend on Linux).

    ``python`` is the interpreter the sandbox runs (it must live under ``/usr``, which is
    mounted read-only). ``seccomp`` and ``cgroups`` default to "when available"; pass True to
    require them. ``limits`` are the defaults for runs that give none.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        python: str = "/usr/bin/python3",
        bwrap: str | None = None,
        seccomp: bool | None = None,
        cgroups: bool | None = None,
    ) -> None:
        self.bwrap = find_bwrap(bwrap)
        if not Path(python).is_file() or not os.path.realpath(python).startswith("/usr/"):
            raise SandboxUnavailableError(
                f"the sandbox's Python {python!r} is missing or not under /usr",
                hint="install it with: apt-get install python3-minimal",
            )
        self.python = python
        self.limits = limits or Limits()
        self.switch_uid = os.geteuid() == 0
        self.cgroups = cgroups_available() if cgroups is None else cgroups
        if self.cgroups and not cgroups_available():
            raise SandboxUnavailableError(
                "cgroup v1 memory and pids controllers are not available to this process",
                hint="run as root on a cgroup v1 host, or pass cgroups=False",
            )
        self.seccomp = seccomp_available() if seccomp is None else seccomp
        self._bpf = compile_filter() if self.seccomp else None

    async def run(
        self,
        code: str,
        *,
        runtime: Runtime = "python",
        files: Mapping[str, bytes] | None = None,
        limits: Limits | None = None,
        allow_net: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Start a fresh sandbox, run ``code`` in it, destroy it (see ``Sandbox.run``)."""
        limits = limits or self.limits
        checked = check_files(files or {})
        instance = await self.start(disk_mb=limits.disk_mb, allow_net=allow_net)
        try:
            return await instance.execute(
                code, runtime=runtime, files=checked, limits=limits, env=env
            )
        finally:
            await instance.destroy()

    async def start(self, *, disk_mb: int, allow_net: Sequence[str] = ()) -> SandboxInstance:
        """Start a sandbox that waits for one job (what the warm pool keeps ready)."""
        proxy = None
        if allow_net:
            proxy = NetProxy(AllowList(allow_net))
            await proxy.start()
        cgroup = CgroupV1() if self.cgroups else None
        uid = HOST_UID_BASE + next(_uids) % HOST_UID_SPAN if self.switch_uid else None
        result_r, result_w = os.pipe()
        keep = [result_w]
        if self._bpf is not None:
            bpf_fd = os.memfd_create("keel-seccomp", 0)
            os.write(bpf_fd, self._bpf)
            os.lseek(bpf_fd, 0, os.SEEK_SET)
            keep.append(bpf_fd)
        argv = self._argv(disk_mb, result_w, keep[1] if len(keep) > 1 else None, proxy)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=keep,
                process_group=0,
                preexec_fn=_enter_sandbox_identity(cgroup, uid),
                env={"PATH": BASE_ENV["PATH"]},
            )
        except OSError as e:
            os.close(result_r)
            if cgroup is not None:
                cgroup.destroy()
            if proxy is not None:
                await proxy.close()
            raise SandboxError(f"could not start bubblewrap: {e}") from e
        finally:
            for fd in keep:
                os.close(fd)
        instance = SandboxInstance(
            proc, await LineReader.open(result_r), cgroup, proxy, uid is not None
        )
        await instance.wait_ready()
        return instance

    def _argv(
        self, disk_mb: int, result_fd: int, bpf_fd: int | None, proxy: NetProxy | None
    ) -> list[str]:
        args = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
        args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
        args += ["--ro-bind", "/usr", "/usr"]
        for link in map(Path, SYSTEM_LINKS):
            if link.is_symlink():
                args += ["--symlink", str(link.readlink()), str(link)]
            elif link.is_dir():
                args += ["--ro-bind", str(link), str(link)]
        for path in ETC_FILES:
            args += ["--ro-bind-try", path, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
        size = str(disk_mb << 20)
        args += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
        args += ["--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]
        args += ["--perms", "0755", "--size", size, "--tmpfs", "/workspace"]
        if proxy is not None:
            args += ["--ro-bind", str(proxy.dir), str(Path(_launcher.PROXY_SOCKET).parent)]
        # The root and what bubblewrap made in it (/etc, /dev) become read-only too: the
        # program can write to /workspace, /tmp and /dev/shm only.
        args += ["--remount-ro", "/"]
        args += ["--chdir", "/workspace", "--clearenv", "--setenv", "PATH", BASE_ENV["PATH"]]
        if bpf_fd is not None:
            args += ["--seccomp", str(bpf_fd)]
        return [*args, self.python, "-I", "-S", "-c", _launcher_source(), str(result_fd)]


def _enter_sandbox_identity(cgroup: CgroupV1 | None, uid: int | None) -> Callable[[], None] | None:
    """The step between fork and exec of bubblewrap: join the cgroups, then drop root."""
    if cgroup is None and uid is None:
        return None

    def enter() -> None:
        if cgroup is not None:
            cgroup.join()
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)

    return enter
