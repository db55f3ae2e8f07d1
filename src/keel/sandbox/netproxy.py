"""The allow-list proxy: the only way out of a sandbox that was given ``allow_net``.

A sandbox always has its own empty network namespace. With an allow-list, the host runs this
HTTP proxy on a Unix socket that is bind-mounted into the sandbox; the launcher forwards
``127.0.0.1:3128`` inside the sandbox to it and sets ``HTTP_PROXY``/``HTTPS_PROXY``. The proxy
accepts ``CONNECT host:port`` (HTTPS and any TCP) and absolute-form HTTP requests, and only to a
host on the list; anything else gets ``403``. Names are resolved by the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from keel.errors import SandboxInputError

__all__ = ["AllowList", "NetProxy"]

HEAD_LIMIT = 16 * 1024
DENIED_BODY = b"keel sandbox: host is not in the allow-list\n"
DENIED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(
    DENIED_BODY
)
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _split_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if port and not port.isdigit():
        raise ValueError(text)
    return host.lower().rstrip("."), int(port) if port else None


class AllowList:
    """Entries ``host``, ``host:port`` or ``*.domain`` (any subdomain); matching ignores case."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.rules: list[tuple[str, int | None]] = []
        for entry in entries:
            try:
                host, port = _split_host_port(entry.strip())
            except ValueError:
                host, port = "", None
            if not host or "/" in host or " " in host:
                raise SandboxInputError(
                    f"invalid network allow-list entry {entry!r}",
                    hint="use 'host', 'host:port' or '*.domain', e.g. 'pypi.org:443'",
                )
            self.rules.append((host, port))

    def allows(self, host: str, port: int) -> bool:
        """True when ``host:port`` matches an entry."""
        host = host.lower().rstrip(".")
        for rule_host, rule_port in self.rules:
            if rule_port is not None and rule_port != port:
                continue
            if rule_host == host or (rule_host.startswith("*.") and host.endswith(rule_host[1:])):
                return True
        return False


class NetProxy:
    """One sandbox's proxy: a Unix socket in a private directory, served until ``close``."""

    def __init__(self, allow: AllowList) -> None:
        self.allow = allow
        self.dir = Path(tempfile.mkdtemp(prefix="keel-net-"))
        self.dir.chmod(0o755)
        self.socket_path = self.dir / "proxy.sock"
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on the socket (readable and writable by the sandbox's uid)."""
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path))
        self.socket_path.chmod(0o666)

    async def close(self) -> None:
        """Stop listening, cut every open connection and remove the socket."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > HEAD_LIMIT:
            return
        line, _, rest = head.partition(b"\r\n")
        method, target, version = line.decode("latin-1").split(" ", 2)
        if method.upper() == "CONNECT":
            host, port = _split_host_port(target)
            forward = b""
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                writer.write(DENIED + DENIED_BODY)
                return
            host, port = url.hostname, url.port or 80
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
            forward = f"{method} {path} {version}\r\n".encode("latin-1") + rest
        if port is None or not self.allow.allows(host, port):
            writer.write(DENIED + DENIED_BODY)
            await writer.drain()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=10
            )
        except (OSError, TimeoutError):
            writer.write(BAD_GATEWAY)
            await writer.drain()
            return
        if forward:
            up_writer.write(forward)
        else:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
