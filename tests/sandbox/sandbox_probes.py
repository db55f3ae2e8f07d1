"""Shared by the sandbox tests: the small limits they run under, and host-side probes."""

from __future__ import annotations

from pathlib import Path

from keel.sandbox import Limits

# Small limits keep the abuse tests quick; each test that needs more says so.
FAST = Limits(wall_time_s=10, cpu_time_s=10, memory_mb=128, processes=32, disk_mb=16)


def processes_matching(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker`` (what a leak check looks for)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def existing(*paths: str | Path) -> list[str]:
    """Those of ``paths`` that exist on the host."""
    return [str(p) for p in paths if Path(p).exists()]
