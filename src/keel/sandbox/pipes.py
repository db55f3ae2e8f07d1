"""The pipes between the host and a sandbox: capped output, the job, the launcher's messages.

The launcher's report is untrusted (the program runs as the same uid and can tamper with it), so
it is a simple framed format read with a size cap: a header line
``STATUS CPU_US MAXRSS_KB TRUNCATED NFILES``, then per file a line ``NAME_LEN DATA_LEN`` followed by
the name and the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field

__all__ = ["LineReader", "OutputBudget", "Report", "pump", "read_report", "send"]

MAX_NAME = 4096
MAX_FILES = 10_000


@dataclass
class Report:
    """What the launcher said about the run: raw wait status, CPU, memory, files out."""

    status: int
    cpu_s: float
    maxrss_kb: int
    truncated: bool
    files: dict[str, bytes] = field(default_factory=dict)


class OutputBudget:
    """Output bytes left for stdout and stderr together; set ``exceeded`` when they run out."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.exceeded = asyncio.Event()


async def pump(stream: asyncio.StreamReader | None, budget: OutputBudget) -> bytes:
    """Read a stream to EOF, keeping what fits in the shared budget and discarding the rest."""
    if stream is None:
        return b""
    chunks: list[bytes] = []
    while data := await stream.read(1 << 16):
        if budget.exceeded.is_set():
            continue
        if len(data) > budget.left:
            chunks.append(data[: budget.left])
            budget.left = 0
            budget.exceeded.set()
            continue
        budget.left -= len(data)
        chunks.append(data)
    return b"".join(chunks)


async def send(stdin: asyncio.StreamWriter, job: bytes) -> None:
    """Write the job and close the pipe; a sandbox that is gone already is not an error."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(job)
        await stdin.drain()
        stdin.close()


class LineReader:
    """Reads the launcher's one-line messages from its result pipe, at most ``cap`` bytes each."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.BaseTransport) -> None:
        self._reader = reader
        self._transport = transport
        self._buffer = b""

    @classmethod
    async def open(cls, fd: int) -> LineReader:
        """Take over the read end ``fd`` of the result pipe."""
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        return cls(reader, transport)

    async def line(self, cap: int) -> bytes | None:
        """The next line; None at EOF or when it grows past ``cap`` bytes."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > cap:
                return None
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line if len(line) <= cap else None

    async def exactly(self, size: int) -> bytes | None:
        """The next ``size`` bytes; None at EOF."""
        while len(self._buffer) < size:
            chunk = await self._reader.read(max(1 << 16, size - len(self._buffer)))
            if not chunk:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def close(self) -> None:
        """Close the pipe."""
        self._transport.close()


async def read_report(messages: LineReader, files_cap: int) -> Report | None:
    """Read and check the launcher's report; None if it is missing, malformed or too large."""
    header = await messages.line(128)
    try:
        status, cpu_us, maxrss, truncated, count = (int(v) for v in (header or b"").split())
    except ValueError:
        return None
    if not 0 <= count <= MAX_FILES:
        return None
    report = Report(status, cpu_us / 1e6, maxrss, bool(truncated))
    left = files_cap
    for _ in range(count):
        try:
            name_len, data_len = (int(v) for v in (await messages.line(64) or b"").split())
        except ValueError:
            return None
        if not 0 < name_len <= MAX_NAME or not 0 <= data_len <= left:
            return None
        name, data = await messages.exactly(name_len), await messages.exactly(data_len)
        if name is None or data is None:
            return None
        left -= data_len
        report.files[name.decode("utf-8", "surrogateescape")] = data
    return report
