"""Per-sandbox cgroup v1 groups: a memory limit, a process limit, and a list of what to kill.

Used when the host runs as root with the cgroup v1 ``memory`` and ``pids`` controllers mounted
(as on this project's machines). Each sandbox gets its own group under ``keel-sandbox/``, joined
before bubblewrap starts, so every process of the run is counted, limited and killed together.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

__all__ = ["CgroupV1", "cgroups_available"]

ROOT = Path("/sys/fs/cgroup")
PARENT = "keel-sandbox"
CONTROLLERS = ("memory", "pids")


def cgroups_available() -> bool:
    """True when this process can create memory and pids groups (root, cgroup v1)."""
    if os.geteuid() != 0:
        return False
    for controller in CONTROLLERS:
        base = ROOT / controller
        if not (base / "cgroup.procs").exists():
            return False
        try:
            (base / PARENT).mkdir(exist_ok=True)
        except OSError:
            return False
    return (ROOT / "memory" / "memory.limit_in_bytes").exists()


class CgroupV1:
    """One sandbox's memory and pids groups."""

    def __init__(self) -> None:
        name = uuid.uuid4().hex[:16]
        self.dirs = [ROOT / c / PARENT / name for c in CONTROLLERS]
        for d in self.dirs:
            d.mkdir()
        self.memory, self.pids = self.dirs
        # Opened now so that joining, in the forked child before exec, is one write per group.
        self._procs = [os.open(d / "cgroup.procs", os.O_WRONLY) for d in self.dirs]

    def join(self) -> None:
        """Move the calling process into both groups (called in the child before exec)."""
        pid = str(os.getpid()).encode()
        for fd in self._procs:
            os.write(fd, pid)

    def set_limits(self, memory_bytes: int, processes: int) -> None:
        """Cap memory (RAM and, where accounted, swap) and the number of tasks."""
        (self.memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        memsw = self.memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            with contextlib.suppress(OSError):
                memsw.write_text(str(memory_bytes))
        (self.pids / "pids.max").write_text(str(processes))

    def oom_killed(self) -> bool:
        """True when the kernel killed a process of this group for exceeding its memory."""
        try:
            for line in (self.memory / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
            # Kernels before 4.13 have no oom_kill counter: a peak at the limit is the sign.
            return int((self.memory / "memory.failcnt").read_text()) > 0 and self._at_limit()
        except (OSError, ValueError):
            return False

    def _at_limit(self) -> bool:
        peak = int((self.memory / "memory.max_usage_in_bytes").read_text())
        limit = int((self.memory / "memory.limit_in_bytes").read_text())
        return peak >= limit - (1 << 20)

    def peak_memory_kb(self) -> int:
        """The group's peak memory use (RAM, page cache and tmpfs pages), in KiB."""
        try:
            return int((self.memory / "memory.max_usage_in_bytes").read_text()) // 1024
        except (OSError, ValueError):
            return 0

    def pids_now(self) -> list[int]:
        """Every process still in the group."""
        try:
            text = (self.pids / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill_all(self) -> None:
        """SIGKILL every process in the group (those that left bubblewrap's PID namespace too)."""
        for pid in self.pids_now():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def try_remove(self) -> bool:
        """Kill what is left and remove both groups, once; False if one is still busy."""
        for fd in self._procs:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._procs = []
        self.kill_all()
        removed = True
        for d in self.dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        return removed

    def destroy(self) -> None:
        """Kill whatever is left in the group, then remove both groups (blocks up to 5 s)."""
        deadline = time.monotonic() + 5.0
        while not self.try_remove() and time.monotonic() < deadline:
            time.sleep(0.005)
