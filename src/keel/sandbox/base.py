"""The ``Sandbox`` protocol: run untrusted code or a command, get a ``Result`` back.

Every run starts from a fresh private filesystem holding only the files given and is destroyed
afterwards. ``Limits`` bound what one run may use; a run that hits a limit is killed and the
``Result`` says which limit it hit, with a distinct exit code (see ``EXIT_CODES``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from keel.errors import SandboxInputError

__all__ = [
    "EXIT_CODES",
    "Limit",
    "Limits",
    "Result",
    "Runtime",
    "Sandbox",
    "Usage",
    "check_files",
]

Runtime = Literal["python", "shell"]
"""``python`` runs the code with the sandbox's Python 3; ``shell`` runs it with ``/bin/sh -c``."""


class Limit(StrEnum):
    """A limit that ended a run."""

    WALL_TIME = "wall_time"
    CPU_TIME = "cpu_time"
    MEMORY = "memory"
    OUTPUT = "output"
    FILE_SIZE = "file_size"


EXIT_CODES: Mapping[Limit, int] = {
    Limit.WALL_TIME: 124,  # as timeout(1)
    Limit.CPU_TIME: 124,
    Limit.MEMORY: 137,  # killed (128 + SIGKILL), as after an out-of-memory kill
    Limit.OUTPUT: 141,  # 128 + SIGPIPE: the reader stopped reading
    Limit.FILE_SIZE: 153,  # 128 + SIGXFSZ
}
"""The exit code a ``Result`` reports when a limit ended the run (otherwise the program's own)."""


class Limits(BaseModel):
    """What one run may use. Every limit is enforced by the kernel or by the host, not by the code.

    ``processes`` counts every process and thread of the run. ``disk_mb`` is the size of the
    private workspace and ``/tmp`` (each). ``output_bytes`` bounds stdout and stderr together;
    ``files_out_bytes`` bounds the files handed back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    wall_time_s: float = Field(default=30.0, gt=0, le=86_400)
    cpu_time_s: int = Field(default=30, ge=1, le=86_400)
    memory_mb: int = Field(default=512, ge=16, le=1_048_576)
    processes: int = Field(default=64, ge=1, le=100_000)
    open_files: int = Field(default=256, ge=16, le=1_048_576)
    file_size_mb: int = Field(default=64, ge=1, le=1_048_576)
    disk_mb: int = Field(default=128, ge=1, le=1_048_576)
    output_bytes: int = Field(default=1 << 20, ge=1, le=1 << 30)
    files_out_bytes: int = Field(default=16 << 20, ge=0, le=1 << 30)


class Usage(BaseModel):
    """What a run used: wall time from code handed over to exit, CPU time and peak memory."""

    model_config = ConfigDict(frozen=True)

    wall_time_s: float
    cpu_time_s: float = 0.0
    max_rss_kb: int = 0


class Result(BaseModel):
    """The outcome of one run.

    ``exit_code`` is the program's own, or ``EXIT_CODES[limit]`` when a limit ended it, or
    128 + N when signal N killed it. ``stdout``/``stderr`` are the raw bytes the program wrote
    (cut at ``Limits.output_bytes``); ``files_out`` holds every file of the workspace that the
    run created or changed, by path relative to the workspace.
    """

    model_config = ConfigDict(frozen=True)

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    files_out: dict[str, bytes] = Field(default_factory=dict)
    usage: Usage
    limit: Limit | None = None
    timed_out: bool = False
    files_truncated: bool = False

    @property
    def ok(self) -> bool:
        """True when the program exited with status 0 and no limit was hit."""
        return self.exit_code == 0 and self.limit is None

    @property
    def stdout_text(self) -> str:
        """``stdout`` decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """``stderr`` decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")

    def limit_message(self) -> str | None:
        """One line that says which limit ended the run, or None."""
        if self.limit is None:
            return None
        return f"sandbox: {self.limit.value.replace('_', ' ')} limit exceeded, run killed"


@runtime_checkable
class Sandbox(Protocol):
    """Runs code in isolation. Each call is a fresh sandbox, destroyed when it returns."""

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
        """Run ``code`` with ``files`` in an empty workspace, under ``limits``.

        ``allow_net`` lists ``host`` or ``host:port`` entries the run may reach; empty means no
        network at all. ``env`` is the whole environment the program sees besides a few
        defaults (``PATH``, ``HOME``, ``LANG``): nothing of the host's is passed on.
        """
        ...


def check_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """Validate workspace file names: relative, normalised, inside the workspace."""
    checked: dict[str, bytes] = {}
    for name, data in files.items():
        norm = posixpath.normpath(name) if name else ""
        if (
            not norm
            or norm in (".", "..")
            or norm.startswith(("/", "../"))
            or "\0" in norm
            or norm != name.rstrip("/")
        ):
            raise SandboxInputError(
                f"invalid workspace file name {name!r}",
                hint="use a relative path inside the workspace, such as 'data/input.csv'",
            )
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SandboxInputError(f"file {name!r} must be bytes, not {type(data).__name__}")
        checked[norm] = bytes(data)
    return checked
