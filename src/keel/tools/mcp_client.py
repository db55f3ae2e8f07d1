"""Use the tools of an MCP server as Keel tools, through the official ``mcp`` SDK.

``MCPTools`` keeps one connection to a server (stdio: a ``StdioServerParameters``; streamable
HTTP: a URL) in a background task, lists its tools once, and turns each into a ``Tool`` whose
arguments are checked against the server's JSON schema before the call. A call that finds the
connection gone reconnects once and tries again; calls have the registry's timeout. Install with
``pip install 'keel[mcp]'``.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Iterable
from typing import Any

from keel.errors import MissingDependencyError, RetryableToolError, ToolExecutionError

try:
    import anyio
    import jsonschema
    import mcp_types
    from mcp import Client, StdioServerParameters
    from mcp.shared.exceptions import MCPError
    from mcp_types.jsonrpc import CONNECTION_CLOSED
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("mcp", "mcp", feature="MCP support") from e

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from keel.tools.base import Effect, Tool
from keel.tools.registry import ToolRegistry
from keel.tools.resilience import ToolPolicy

__all__ = ["MCPTools", "StdioServerParameters"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_CONNECTION_ERRORS = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    ConnectionError,
)


def _schema_arguments(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A model that validates arguments with the server's JSON schema and reports it as is."""
    validator = jsonschema.Draft202012Validator(schema)
    frozen = copy.deepcopy(schema)

    class Arguments(BaseModel):
        model_config = ConfigDict(extra="allow", title=f"{name}_arguments")

        @model_validator(mode="before")
        @classmethod
        def _check(cls, data: Any) -> Any:
            errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
            if errors:
                where = [".".join(map(str, e.path)) for e in errors]
                raise PydanticCustomError(
                    "json_schema",
                    "; ".join(
                        f"{w}: {e.message}" if w else e.message
                        for w, e in zip(where, errors, strict=True)
                    ),
                )
            return data

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return copy.deepcopy(frozen)

    return Arguments


def _effects(annotations: mcp_types.ToolAnnotations | None) -> frozenset[Effect]:
    """The server's hints, mapped to effects (hints only: pass ``effects=`` to decide yourself)."""
    if annotations is None:
        return frozenset()
    if annotations.read_only_hint:
        return frozenset({Effect.READ_ONLY})
    found = {Effect.WRITES}
    if annotations.open_world_hint:
        found.add(Effect.SENDS_OUTSIDE)
    return frozenset(found)


def _text(result: mcp_types.CallToolResult) -> str:
    parts = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content]")
    return "\n".join(parts)


class MCPTools:
    """The tools of one MCP server, as a ``ToolRegistry`` (``await start()`` or ``async with``).

    ``name`` labels the server in errors; ``prefix`` is put before every tool name; ``effects``
    overrides the server's own hints for every tool; ``timeout`` bounds each call.
    """

    def __init__(
        self,
        server: StdioServerParameters | str | Any,
        *,
        name: str = "mcp",
        prefix: str = "",
        version: str = "1",
        effects: Effect | str | Iterable[Effect | str] | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 30.0,
        reconnect: bool = True,
    ) -> None:
        self.server = server
        self.name = name
        self.prefix = prefix
        self.version = version
        self.effects = (
            None
            if effects is None
            else frozenset(Effect(e) for e in ([effects] if isinstance(effects, str) else effects))
        )
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.registry = ToolRegistry()
        self.connections = 0
        self._client: Client | None = None
        self._error: BaseException | None = None
        self._want = asyncio.Event()
        self._ready = asyncio.Event()
        self._drop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MCPTools:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> ToolRegistry:
        """Connect, list the server's tools and build ``registry`` from them."""
        self._task = asyncio.create_task(self._keep(), name=f"mcp-{self.name}")
        client = await self._connected()
        listing = await client.list_tools()
        for tool in listing.tools:
            self.registry.add(self._tool(tool))
        return self.registry

    async def close(self) -> None:
        """Close the connection (and stop a stdio server process)."""
        self._stopping = True
        self._drop.set()
        self._want.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _keep(self) -> None:
        """Owns the connection: the SDK's client must be entered and left in one task."""
        while True:
            await self._want.wait()
            self._want.clear()
            if self._stopping:
                return
            self._drop = asyncio.Event()
            connected = False
            try:
                async with Client(self.server, read_timeout_seconds=self.timeout) as client:
                    self._client, self._error, connected = client, None, True
                    self.connections += 1
                    self._ready.set()
                    await self._drop.wait()
            except Exception as e:
                self._error = e
                if not connected:  # only a failed attempt answers the caller waiting for it
                    self._ready.set()
            finally:
                self._client = None

    async def _connected(self) -> Client:
        client = self._client
        if client is not None:
            return client
        async with self._lock:
            if self._client is None:
                self._ready.clear()
                self._want.set()
                try:
                    await asyncio.wait_for(self._ready.wait(), self.connect_timeout)
                except TimeoutError:
                    raise RetryableToolError(
                        f"MCP server {self.name!r} did not connect within {self.connect_timeout} s"
                    ) from None
            if self._client is None:
                reason = type(self._error).__name__ if self._error else "closed"
                raise RetryableToolError(
                    f"cannot connect to MCP server {self.name!r} ({reason})",
                    hint="check that the server command or URL is right and the server is up",
                )
            return self._client

    def _lost(self, client: Client) -> None:
        if self._client is client:
            self._client = None
            self._drop.set()

    def _tool(self, spec: mcp_types.Tool) -> Tool:
        local = self.prefix + _UNSAFE.sub("_", spec.name)[: 64 - len(self.prefix)]

        effects = self.effects if self.effects is not None else _effects(spec.annotations)
        repeatable = effects == frozenset({Effect.READ_ONLY})

        async def handler(**arguments: Any) -> Any:
            return await self._call(spec.name, arguments, repeatable=repeatable)

        return Tool(
            name=local,
            description=spec.description or spec.name,
            version=self.version,
            arguments=_schema_arguments(local, spec.input_schema),
            handler=handler,
            timeout=self.timeout,
            effects=effects,
            policy=ToolPolicy(),
        )

    async def _call(self, remote: str, arguments: dict[str, Any], *, repeatable: bool) -> Any:
        """Call ``remote``; on a lost connection, reconnect, and call again only if the tool is
        read-only (a call with effects may have run before the connection dropped)."""
        for attempt in (1, 2):
            client = await self._connected()
            try:
                result = await client.call_tool(remote, arguments)
            except _CONNECTION_ERRORS:
                lost = True
            except MCPError as e:
                if e.error.code != CONNECTION_CLOSED:
                    raise ToolExecutionError(
                        f"MCP error {e.error.code}: {e.error.message}"
                    ) from None
                lost = True
            else:
                if result.is_error:
                    raise ToolExecutionError(_text(result) or "the MCP tool reported an error")
                if result.structured_content is not None:
                    return result.structured_content
                return _text(result)
            if lost:
                self._lost(client)
                if attempt == 2 or not self.reconnect or not repeatable:
                    break
        raise RetryableToolError(
            f"lost the connection to MCP server {self.name!r} during the call",
            hint="it reconnects on the next call; the call may or may not have taken effect",
        )
