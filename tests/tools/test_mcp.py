"""MCP both ways, with the official SDK: an SDK server's tools used as Keel tools (stdio and
streamable HTTP), and a Keel registry served to the SDK's client (in-process and over stdio)."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mcp_types
import pytest
from mcp import Client, StdioServerParameters

from keel.llm import ToolCallPart
from keel.tools import Effect, ToolRegistry
from keel.tools.mcp_client import MCPTools
from keel.tools.mcp_server import mcp_server

SDK_SERVER = '''
import os
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

server = MCPServer("demo")

@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def pid() -> int:
    """The server's process id."""
    return os.getpid()

@server.tool(name="die.now")
def die() -> str:
    """Kills the server process."""
    os._exit(1)

@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def die_once(marker: str) -> str:
    """Kills the server the first time (a marker file remembers), answers after that."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return "survived"

@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps."""
    import anyio
    await anyio.sleep(seconds)
    return "done"

@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(reason)

server.run()
'''

KEEL_TOOLS = '''
from keel.tools import ToolRegistry

registry = ToolRegistry()

@registry.tool(effects="read_only")
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()

@registry.tool(effects="sends_outside", requires_approval=True)
def wire_money(amount: int) -> str:
    """Needs a human first."""
    return "sent"
'''


def call(name: str, **arguments: object) -> ToolCallPart:
    return ToolCallPart(id="1", name=name, arguments=arguments)


@pytest.fixture
def sdk_server(tmp_path: Path) -> StdioServerParameters:
    script = tmp_path / "demo_server.py"
    script.write_text(SDK_SERVER)
    return StdioServerParameters(command=sys.executable, args=[str(script)], cwd=str(tmp_path))


async def test_sdk_server_tools_become_keel_tools(sdk_server: StdioServerParameters) -> None:
    async with MCPTools(sdk_server, name="demo", prefix="demo_", timeout=2) as tools:
        registry = tools.registry
        names = [t.name for t in registry]
        assert names == [
            "demo_add",
            "demo_die_now",
            "demo_die_once",
            "demo_fail",
            "demo_pid",
            "demo_slow",
        ]
        add = registry.get("demo_add")
        assert add.effects == {Effect.READ_ONLY} and add.description == "Add two integers."
        assert add.parameters["required"] == ["a", "b"]
        assert registry.get("demo_slow").has_side_effects

        ok = await registry.call(call("demo_add", a=2, b=3))
        assert ok.ok and ok.value == {"result": 5}
        bad = await registry.call(call("demo_add", a="x"))
        assert bad.error is not None and bad.error["type"] == "invalid_arguments"
        assert bad.error["message"] == (
            "arguments: 'b' is a required property; a: 'x' is not of type 'integer'"
        )
        failed = await registry.call(call("demo_fail", reason="nope"))
        assert failed.error is not None and failed.error["type"] == "tool_error"
        slow = await registry.call(call("demo_slow", seconds=30))
        assert slow.error is not None and slow.error["type"] == "timeout"


async def test_a_lost_server_is_reconnected(
    sdk_server: StdioServerParameters, tmp_path: Path
) -> None:
    async with MCPTools(sdk_server, timeout=10) as tools:
        registry = tools.registry
        first = (await registry.call(call("pid"))).value
        # A tool with effects is not repeated after the connection drops mid-call...
        died = await registry.call(call("die_now"))
        assert died.error is not None and died.error["retryable"] is True
        assert "may or may not have taken effect" in died.error["hint"]
        # ...the next call reconnects to a fresh server process.
        second = (await registry.call(call("pid"))).value
        assert first != second and tools.connections == 2
        # A read-only tool is called again on the new connection.
        marker = tmp_path / "died-once"
        again = await registry.call(call("die_once", marker=str(marker)))
        assert again.ok and again.value == {"result": "survived"}
        assert tools.connections == 3


async def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    broken = StdioServerParameters(command=sys.executable, args=["-c", "raise SystemExit(2)"])
    tools = MCPTools(broken, name="broken", connect_timeout=20)
    with pytest.raises(Exception, match="cannot connect to MCP server 'broken'"):
        await tools.start()
    await tools.close()


def keel_registry() -> ToolRegistry:
    namespace: dict[str, object] = {}
    exec(KEEL_TOOLS, namespace)
    registry = namespace["registry"]
    assert isinstance(registry, ToolRegistry)
    return registry


async def test_sdk_client_calls_a_served_registry_in_process() -> None:
    server = mcp_server(keel_registry(), name="keel-test")
    async with Client(server) as client:
        listing = await client.list_tools()
        assert [t.name for t in listing.tools] == ["shout"]  # approval-only tools are not served
        shout = listing.tools[0]
        assert shout.input_schema["required"] == ["text"]
        assert shout.annotations is not None and shout.annotations.read_only_hint is True
        result = await client.call_tool("shout", {"text": "hi"})
        assert not result.is_error
        assert isinstance(result.content[0], mcp_types.TextContent)
        assert result.content[0].text == "HI"
        bad = await client.call_tool("shout", {"text": 3})
        assert bad.is_error and "invalid_arguments" in bad.content[0].text  # type: ignore[union-attr]
        missing = await client.call_tool("wire_money", {"amount": 1})
        assert missing.is_error and "unknown_tool" in missing.content[0].text  # type: ignore[union-attr]


async def test_keel_mcp_serve_over_stdio_with_the_sdk_client(tmp_path: Path) -> None:
    (tmp_path / "served_tools.py").write_text(KEEL_TOOLS)
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-c",
            "from keel.tools.mcp_cli import app; app()",
            "serve",
            "-r",
            "served_tools:registry",
        ],
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        listing = await client.list_tools()
        assert [t.name for t in listing.tools] == ["shout"]
        result = await client.call_tool("shout", {"text": "over stdio"})
        assert result.content[0].text == "OVER STDIO"  # type: ignore[union-attr]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "http_tools.py").write_text(KEEL_TOOLS)
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from keel.tools.mcp_cli import app; app()",
            "serve",
            "--http",
            "--port",
            str(port),
            "-r",
            "http_tools:registry",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def test_keel_tools_over_streamable_http_both_ways(http_server: str) -> None:
    async with Client(http_server) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["shout"]
    async with MCPTools(http_server, name="http", timeout=5) as tools:
        result = await tools.registry.call(call("shout", text="via http"))
        assert result.ok and result.value == "VIA HTTP"
        assert tools.registry.get("shout").effects == {Effect.READ_ONLY}
