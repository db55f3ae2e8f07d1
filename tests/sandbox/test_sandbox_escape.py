"""Escape and abuse attempts: each one is run for real inside the sandbox and must be contained.

Every test asserts two things: what the program saw inside (the attempt failed, or had no
effect beyond the sandbox), and, where it matters, what the host sees afterwards.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import textwrap
import uuid
from pathlib import Path

import pytest
from sandbox_probes import FAST, existing, processes_matching

from keel.sandbox import BubblewrapSandbox, Limit, Sandbox
from keel.sandbox.cgroup import ROOT as CGROUP_ROOT


async def run_py(sandbox: Sandbox, code: str, **kwargs: object) -> str:
    result = await sandbox.run(textwrap.dedent(code), **kwargs)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.stderr_text
    return result.stdout_text


# --- files outside the workspace -------------------------------------------------------------


async def test_host_files_are_not_visible(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host-secret-123")
    out = await run_py(
        sandbox,
        f"""
        import os
        for path in [{str(secret)!r}, "/etc/shadow", "/etc/passwd", "/root", "/home",
                     "/work", "/var", "/srv", "/sys", "/boot", "/run"]:
            print(path, os.path.exists(path))
        print(sorted(os.listdir("/")))
        """,
    )
    assert "host-secret-123" not in out
    for line in out.splitlines()[:-1]:
        assert line.endswith("False"), line
    assert out.splitlines()[-1] == str(
        sorted(["bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr", "workspace"])
    )


async def test_writes_outside_the_workspace_fail_and_reach_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    out = await run_py(
        sandbox,
        f"""
        for path in ["/usr/bin/keel-evil", "/etc/keel-evil", "/keel-evil", "/proc/keel-evil",
                     "/dev/keel-evil", {str(tmp_path / "evil")!r}]:
            try:
                open(path, "w").write("x")
                print(path, "WRITTEN")
            except OSError as e:
                print(path, type(e).__name__)
        """,
    )
    assert "WRITTEN" not in out
    assert existing("/usr/bin/keel-evil", "/etc/keel-evil", "/keel-evil", tmp_path / "evil") == []


async def test_symlink_out_of_the_workspace_stays_inside(sandbox: Sandbox) -> None:
    # A link to a host path resolves inside the sandbox's own tree, and files_out skips links.
    result = await sandbox.run(
        "import os; os.symlink('/etc/hostname', 'link'); os.symlink('/proc/1/environ', 'env')"
    )
    assert result.ok, result.stderr_text
    assert result.files_out == {}


async def test_nothing_persists_between_runs(sandbox: Sandbox) -> None:
    await run_py(
        sandbox,
        "open('/workspace/left.txt', 'w').write('x'); open('/tmp/left.txt', 'w').write('x')",
    )
    out = await run_py(
        sandbox,
        "import os; print(os.listdir('/workspace'), os.listdir('/tmp'))",
    )
    assert "left.txt" not in out


async def test_concurrent_runs_cannot_see_each_other(sandbox: Sandbox) -> None:
    secret = f"keel-neighbour-{uuid.uuid4().hex}"
    holder = asyncio.create_task(
        sandbox.run(
            f"for d in ('/tmp', '/dev/shm', '/workspace'): open(d + '/s', 'w').write({secret!r})\n"
            "import socket, time\n"
            "u = socket.socket(socket.AF_UNIX); u.bind('\\0keel-neighbour'); u.listen(1)\n"
            "print('holding', flush=True); time.sleep(3)"
        )
    )
    await asyncio.sleep(0.5)
    out = await run_py(
        sandbox,
        """
        import os, socket
        seen = []
        for d in ("/tmp", "/dev/shm", "/workspace"):
            for root, _, names in os.walk(d):
                seen += [open(os.path.join(root, name)).read() for name in names]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                seen.append(open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"))
            except OSError:
                pass
        u = socket.socket(socket.AF_UNIX)
        print("abstract socket reachable:", u.connect_ex("\\0keel-neighbour") == 0)
        print(seen)
        """,
    )
    assert (await holder).stdout_text == "holding\n"
    assert secret not in out
    assert "abstract socket reachable: False" in out


# --- network ---------------------------------------------------------------------------------


@pytest.fixture
def host_listener() -> object:
    """A TCP server on the host's loopback that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


async def test_host_loopback_is_unreachable(sandbox: Sandbox, host_listener: socket.socket) -> None:
    port = host_listener.getsockname()[1]
    out = await run_py(
        sandbox,
        f"""
        import socket
        s = socket.socket()
        s.settimeout(2)
        print(s.connect_ex(("127.0.0.1", {port})))
        """,
    )
    assert int(out) != 0  # refused by the sandbox's own empty loopback
    with pytest.raises(BlockingIOError):
        host_listener.accept()


async def test_no_external_network_and_no_dns(sandbox: Sandbox) -> None:
    # 192.0.2.1 is TEST-NET-1 (documentation only); with no route the kernel refuses at once,
    # so not a packet leaves the sandbox.
    out = await run_py(
        sandbox,
        """
        import socket
        print(sorted(name for _, name in socket.if_nameindex()))
        s = socket.socket()
        s.settimeout(2)
        print(s.connect_ex(("192.0.2.1", 80)) != 0)
        try:
            socket.getaddrinfo("pypi.org", 443)
            print("resolved")
        except OSError:
            print("no dns")
        """,
    )
    assert out.split("\n")[:3] == ["['lo']", "True", "no dns"]


# --- resource abuse --------------------------------------------------------------------------


async def test_fork_bomb_is_capped(sandbox: Sandbox) -> None:
    limits = FAST.model_copy(update={"wall_time_s": 15, "processes": 20})
    counted = await sandbox.run(
        textwrap.dedent(
            """
            import os, time
            started = 0
            for _ in range(500):
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                started += 1
            print(started)
            """
        ),
        limits=limits,
    )
    assert 1 <= int(counted.stdout_text) <= 19, counted  # the program itself is the 20th
    marker = f"keel-bomb-{uuid.uuid4().hex}"
    bomb = await sandbox.run(
        textwrap.dedent(
            f"""
            import os, subprocess, time
            subprocess.Popen(["sh", "-c", "f() {{ f | f & }}; f # {marker}"])
            peak, end = 0, time.monotonic() + 2
            while time.monotonic() < end:
                peak = max(peak, sum(1 for p in os.listdir("/proc") if p.isdigit()))
                time.sleep(0.01)
            print(peak)
            """
        ),
        limits=limits,
    )
    # Inside the PID namespace: bubblewrap's init, the launcher, and at most 20 of the program.
    assert int(bomb.stdout_text) <= 22, bomb
    assert "Cannot fork" in bomb.stderr_text, bomb  # the bomb did run into the limit
    assert processes_matching(marker) == []
    host = await asyncio.create_subprocess_exec("true")
    assert await host.wait() == 0  # the host can still fork


async def test_memory_bomb_is_killed(sandbox: Sandbox, backend: BubblewrapSandbox) -> None:
    if not backend.cgroups:
        pytest.skip("memory kills are reported with cgroups (root host)")
    result = await sandbox.run(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
        limits=FAST.model_copy(update={"memory_mb": 64}),
    )
    assert result.limit is Limit.MEMORY
    assert result.exit_code == 137
    assert result.limit_message() == "sandbox: memory limit exceeded, run killed"


async def test_memory_bomb_without_cgroups_hits_the_address_space_limit() -> None:
    sandbox = BubblewrapSandbox(limits=FAST, cgroups=False, seccomp=True)
    result = await sandbox.run(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
        limits=FAST.model_copy(update={"memory_mb": 64}),
    )
    assert result.exit_code == 1
    assert "MemoryError" in result.stderr_text


async def test_disk_fill_stops_at_the_workspace_size(sandbox: Sandbox) -> None:
    out = await run_py(
        sandbox,
        """
        import os
        for place in ("/workspace", "/tmp"):
            written = 0
            try:
                for n in range(1000):
                    with open(f"{place}/fill{n}", "wb") as f:
                        f.write(b"x" * (1 << 20))
                    written += 1
            except OSError as e:
                print(place, written, e.errno)
        """,
        limits=FAST.model_copy(update={"disk_mb": 8, "memory_mb": 256}),
    )
    for line in out.splitlines():
        _place, written, errno_ = line.split()
        assert int(written) <= 8
        assert int(errno_) == 28  # ENOSPC
    assert len(out.splitlines()) == 2


async def test_file_size_limit_kills_a_shell_writer(sandbox: Sandbox) -> None:
    result = await sandbox.run(
        "head -c 3000000 /dev/zero > big.bin",
        runtime="shell",
        limits=FAST.model_copy(update={"file_size_mb": 1}),
    )
    assert result.limit is Limit.FILE_SIZE
    assert result.exit_code == 153


async def test_infinite_loop_hits_the_wall_clock(sandbox: Sandbox) -> None:
    result = await sandbox.run(
        "import time\nwhile True: time.sleep(0.01)",
        limits=FAST.model_copy(update={"wall_time_s": 1}),
    )
    assert result.timed_out
    assert result.limit is Limit.WALL_TIME
    assert result.exit_code == 124


async def test_busy_loop_hits_the_cpu_limit(sandbox: Sandbox) -> None:
    result = await sandbox.run(
        "while True: pass", limits=FAST.model_copy(update={"cpu_time_s": 1, "wall_time_s": 20})
    )
    assert result.limit is Limit.CPU_TIME
    assert result.exit_code == 124
    assert not result.timed_out
    assert result.usage.cpu_time_s > 0.5  # kernel CPU accounting is tick-grained


async def test_output_flood_is_cut_and_killed(sandbox: Sandbox) -> None:
    result = await sandbox.run(
        "while True: print('x' * 1000)",
        limits=FAST.model_copy(update={"output_bytes": 10_000}),
    )
    assert result.limit is Limit.OUTPUT
    assert result.exit_code == 141
    assert len(result.stdout) + len(result.stderr) == 10_000


# --- the host's environment, processes and kernel --------------------------------------------


async def test_host_environment_and_secrets_do_not_leak(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_TEST_SECRET", "sk-should-never-leak")
    out = await run_py(
        sandbox,
        """
        import os
        print(dict(os.environ))
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    print(open(f"/proc/{pid}/environ", "rb").read())
                except OSError as e:
                    print(pid, e)
        """,
        env={"GIVEN": "yes"},
    )
    assert "sk-should-never-leak" not in out
    assert "KEEL_TEST_SECRET" not in out
    assert "'GIVEN': 'yes'" in out


async def test_proc_shows_only_the_sandbox_and_sys_is_absent(sandbox: Sandbox) -> None:
    out = await run_py(
        sandbox,
        """
        import os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print(pids)
        print(os.path.exists("/sys/kernel"), os.path.exists("/sys/fs/cgroup"))
        for probe in ("/proc/sys/kernel/hostname", "/proc/sysrq-trigger"):
            try:
                open(probe, "w").write("x")
                print(probe, "WRITTEN")
            except OSError as e:
                print(probe, type(e).__name__)
        print(open("/proc/self/status").read().split("CapEff:")[1].split()[0])
        """,
    )
    lines = out.splitlines()
    pids = eval(lines[0])  # a printed list of ints
    assert max(pids) < 10  # a fresh PID namespace: bubblewrap, the launcher, the program
    assert os.getpid() not in pids or os.getpid() < 10
    assert lines[1] == "False False"
    assert "WRITTEN" not in out
    assert lines[-1] == "0000000000000000"  # no capabilities at all


async def test_ptrace_is_denied(sandbox: Sandbox) -> None:
    out = await run_py(
        sandbox,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        PTRACE_ATTACH = 16
        rc = libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None)
        print(rc, ctypes.get_errno())
        """,
    )
    assert out.split() == ["-1", "1"]  # EPERM


async def test_mount_and_new_namespaces_are_denied(sandbox: Sandbox) -> None:
    out = await run_py(
        sandbox,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
        print("mount", rc, ctypes.get_errno())
        CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
        print("unshare", libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), ctypes.get_errno())
        print("chroot", libc.chroot(b"/tmp"), ctypes.get_errno())
        """,
    )
    for line in out.splitlines():
        _, rc, errno_ = line.split()
        assert (rc, errno_) == ("-1", "1"), line


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86_64 system call numbers")
async def test_kernel_attack_surface_is_filtered(sandbox: Sandbox) -> None:
    # bpf, userfaultfd, io_uring_setup, keyctl, perf_event_open, kexec_load, init_module
    numbers = [321, 323, 425, 250, 298, 246, 175]
    out = await run_py(
        sandbox,
        f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for nr in {numbers}:
            print(libc.syscall(nr, 0, 0, 0, 0, 0), ctypes.get_errno())
        """,
    )
    assert out.splitlines() == ["-1 1"] * len(numbers)  # EPERM from the seccomp filter


async def test_changing_uid_fails(sandbox: Sandbox) -> None:
    out = await run_py(
        sandbox,
        """
        import os
        print(os.getuid(), os.geteuid(), os.getgid())
        for call in (lambda: os.setuid(0), lambda: os.setresuid(0, 0, 0), lambda: os.setgid(0),
                     lambda: os.setgroups([0])):
            try:
                call()
                print("CHANGED")
            except OSError:  # EPERM, or EINVAL: uid 0 does not even exist in the namespace
                print("denied")
        print(os.getuid())
        """,
    )
    lines = out.splitlines()
    assert lines[0] == "65534 65534 65534"
    assert lines[1:5] == ["denied"] * 4
    assert lines[5] == "65534"


async def test_host_processes_cannot_be_signalled(sandbox: Sandbox) -> None:
    victim = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        out = await run_py(
            sandbox,
            f"""
            import os, signal
            for pid in ({victim.pid}, {os.getpid()}):
                try:
                    os.kill(pid, signal.SIGKILL)
                    print("KILLED", pid)
                except ProcessLookupError:
                    print("no such process")
                except PermissionError:
                    print("denied")
            """,
        )
        assert "KILLED" not in out
        await asyncio.sleep(0.05)
        assert victim.returncode is None
    finally:
        victim.kill()
        await victim.wait()


async def test_no_background_process_survives_a_run(sandbox: Sandbox) -> None:
    marker = f"keel-leftover-{uuid.uuid4().hex}"
    result = await sandbox.run(
        f"(setsid sh -c 'sleep 300; echo {marker}' &) ; "
        f"nohup sh -c 'trap \"\" HUP TERM; sleep 300 # {marker}' >/dev/null 2>&1 &"
        f"python3 -c 'import os, time\nif os.fork() == 0:\n  os.setsid()\n  time.sleep(300)' "
        f"{marker} & echo started",
        runtime="shell",
    )
    assert result.stdout_text.strip() == "started"
    assert processes_matching(marker) == []


async def test_killing_the_launcher_still_tears_everything_down(
    sandbox: Sandbox,
) -> None:
    marker = f"keel-orphan-{uuid.uuid4().hex}"
    result = await sandbox.run(
        f"import os, signal, subprocess\n"
        f"subprocess.Popen(['sh', '-c', 'sleep 300 # {marker}'])\n"
        f"os.kill(os.getppid(), signal.SIGKILL)\n"
        f"import time; time.sleep(300)",
        limits=FAST.model_copy(update={"wall_time_s": 5}),
    )
    assert result.exit_code != 0
    assert processes_matching(marker) == []


def sandbox_cgroups() -> set[str]:
    return {
        str(p)
        for controller in ("memory", "pids")
        for p in (CGROUP_ROOT / controller / "keel-sandbox").iterdir()
        if p.is_dir()
    }


async def test_cgroups_are_removed_after_runs(backend: BubblewrapSandbox) -> None:
    if not backend.cgroups:
        pytest.skip("cgroups are used on a root host only")
    before = sandbox_cgroups()
    await asyncio.gather(*(backend.run("print(1)") for _ in range(3)))
    assert sandbox_cgroups() <= before
