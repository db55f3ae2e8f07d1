"""Serve a Keel ``ToolRegistry`` as an MCP server (stdio or streamable HTTP), with the ``mcp`` SDK.

Every call goes through ``ToolRegistry.call``, so validation, timeouts, retries, limits,
secret injection and redaction all apply; a failed call is an MCP result with ``isError`` and the
structured error as its text. Tools that require approval are not served: an MCP client has no way
to ask the registry's human first.
"""

from __future__ import annotations

import uuid
from typing import Any

from keel.errors import MissingDependencyError

try:
    import mcp_types
    from mcp.server import Server
    from mcp.server.context import ServerRequestContext
    from mcp.server.stdio import stdio_server
except ImportError as e:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("mcp", "mcp", feature="MCP support") from e

from keel.llm.messages import ToolCallPart
from keel.tools.base import Effect, Tool
from keel.tools.registry import ToolRegistry

__all__ = ["mcp_server", "serve_http", "serve_stdio"]


def _annotations(tool: Tool) -> mcp_types.ToolAnnotations:
    return mcp_types.ToolAnnotations(
        read_only_hint=not tool.has_side_effects,
        destructive_hint=Effect.WRITES in tool.effects or not tool.effects,
        open_world_hint=Effect.SENDS_OUTSIDE in tool.effects or not tool.effects,
    )


def mcp_server(registry: ToolRegistry, *, name: str = "keel", version: str = "") -> Server[Any]:
    """A low-level MCP ``Server`` that lists and calls the registry's tools."""
    served = registry.filter(lambda t: not t.requires_approval)

    async def list_tools(
        ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(
            tools=[
                mcp_types.Tool(
                    name=t.name,
                    description=t.description,
                    input_schema=t.parameters,
                    annotations=_annotations(t),
                )
                for t in served.tools()
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        call = ToolCallPart(
            id=uuid.uuid4().hex, name=params.name, arguments=dict(params.arguments or {})
        )
        result = await served.call(call)
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(text=result.content())], is_error=not result.ok
        )

    return Server(name, version=version, on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(registry: ToolRegistry, *, name: str = "keel") -> None:
    """Serve over this process's stdin/stdout until the client closes them."""
    server = mcp_server(registry, name=name)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(
    registry: ToolRegistry, *, host: str = "127.0.0.1", port: int = 8765, name: str = "keel"
) -> None:
    """Serve over streamable HTTP at ``http://host:port/mcp`` until cancelled."""
    import uvicorn

    app = mcp_server(registry, name=name).streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()
