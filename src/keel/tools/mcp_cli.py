"""``keel mcp``: serve a tool registry to any MCP client (Claude Desktop, IDEs, other agents)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from keel.console import fail_cleanly
from keel.tools.cli import RegistryOption
from keel.tools.lockfile import load_registry

__all__ = ["app"]

app = typer.Typer(
    help="Model Context Protocol: serve Keel tools to MCP clients.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Model Context Protocol: serve Keel tools to MCP clients."""


@app.command()
@fail_cleanly
def serve(
    registry: RegistryOption,
    http: Annotated[
        bool,
        typer.Option("--http", help="Serve streamable HTTP at http://HOST:PORT/mcp, not stdio."),
    ] = False,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on with --http.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on with --http.")] = 8765,
    name: Annotated[str, typer.Option("--name", help="Server name shown to clients.")] = "keel",
) -> None:
    """Serve the registry's tools over MCP (stdio by default; tools needing approval are left
    out)."""
    from keel.tools.mcp_server import serve_http, serve_stdio

    tools = load_registry(registry)
    if http:
        asyncio.run(serve_http(tools, host=host, port=port, name=name))
    else:
        asyncio.run(serve_stdio(tools, name=name))
