"""Built-in tools: calculator, workspace files, http_get against a local server, search_docs."""

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from keel.errors import ToolExecutionError
from keel.llm import ToolCallPart
from keel.memory.base import VectorRecord
from keel.memory.retrieval import Retriever
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder
from keel.tools import Effect, ToolRegistry
from keel.tools.builtin import (
    HostAllowList,
    calculator_tools,
    evaluate,
    file_tools,
    http_tools,
    search_tools,
)


def call(name: str, **arguments: object) -> ToolCallPart:
    return ToolCallPart(id="1", name=name, arguments=arguments)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(3 + 4) * sqrt(16) / 2", 14),
        ("2 ** 10 - 1", 1023),
        ("-7 // 2", -4),
        ("10 % 4", 2),
        ("round(pi, 3)", 3.142),
        ("max(1, 5, 3) + min(2, 4)", 7),
        ("1 / 3", 1 / 3),
        ("factorial(5)", 120),
    ],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('echo hi')", "Call is not allowed"),
        ("().__class__", "Attribute is not allowed"),
        ("open('x')", "unknown function 'open'"),
        ("9 ** 9 ** 9", "exponents are limited"),
        ("10 ** 5000", "too large"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "sqrt: math domain error"),
        ("[1, 2]", "List is not allowed"),
        ("'a' * 3", "Constant is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("1 +", "not a valid expression"),
        ("+".join(["1"] * 300), "longer than 500"),
        ("factorial(100000)", "limited to 1000"),
        ("True + 1", "Constant is not allowed"),
    ],
)
def test_calculator_refuses_everything_else(expression: str, message: str) -> None:
    with pytest.raises(ToolExecutionError, match=message.replace("(", r"\(")):
        evaluate(expression)


async def test_calculator_tool_returns_values_and_structured_errors() -> None:
    tools = calculator_tools()
    assert tools.get("calculator").effects == {Effect.READ_ONLY}
    assert (await tools.call(call("calculator", expression="6*7"))).value == 42
    bad = await tools.call(call("calculator", expression="x + 1"))
    assert bad.error is not None and bad.error["message"] == "unknown name 'x'"
    assert "sqrt" in bad.error["hint"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape_dir").symlink_to(tmp_path)
    (root / "inner_link").symlink_to(root / "docs" / "a.txt")
    return root


async def test_file_tools_read_and_write_inside_the_workspace(workspace: Path) -> None:
    tools = file_tools(workspace, max_bytes=1000)
    read = await tools.call(call("read_file", path="docs/a.txt"))
    assert read.value == "inside"
    assert (await tools.call(call("read_file", path="inner_link"))).value == "inside"
    wrote = await tools.call(call("write_file", path="out/new.md", content="# hi"))
    assert wrote.value == "wrote 4 bytes to out/new.md"
    assert (workspace / "out" / "new.md").read_text() == "# hi"
    assert tools.get("write_file").effects == {Effect.WRITES}
    big = await tools.call(call("write_file", path="big.txt", content="x" * 2000))
    assert big.error is not None and "larger than 1,000 bytes" in big.error["message"]


@pytest.mark.parametrize(
    ("tool", "path", "message"),
    [
        ("read_file", "../secret.txt", "'..' is not allowed"),
        ("read_file", "docs/../../secret.txt", "'..' is not allowed"),
        ("read_file", "/etc/passwd", "absolute paths are not allowed"),
        ("read_file", "escape", "leads outside the workspace"),
        ("read_file", "escape_dir/secret.txt", "leads outside the workspace"),
        ("write_file", "escape", "leads outside the workspace"),
        ("write_file", "escape_dir/new.txt", "leads outside the workspace"),
        ("write_file", "../new.txt", "'..' is not allowed"),
        ("read_file", "missing.txt", "no such file"),
        ("read_file", "docs", "is a directory"),
    ],
)
async def test_file_tools_refuse_path_escapes(
    workspace: Path, tool: str, path: str, message: str
) -> None:
    tools = file_tools(workspace)
    arguments = {"path": path} if tool == "read_file" else {"path": path, "content": "pwned"}
    result = await tools.call(call(tool, **arguments))
    assert result.error is not None and message in result.error["message"]
    assert (workspace.parent / "secret.txt").read_text() == "outside"
    assert not (workspace.parent / "new.txt").exists()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        routes = {
            "/hello": (200, b"hello world", {}),
            "/big": (200, b"y" * 50_000, {}),
            "/in": (302, b"", {"Location": "/hello"}),
            "/out": (302, b"", {"Location": f"http://localhost:{port}/hello"}),
            "/busy": (503, b"busy", {}),
            "/gone": (404, b"nope", {}),
        }
        if self.path == "/slow":
            time.sleep(2)
        status, body, headers = routes.get(self.path, (200, b"slow", {}))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_http_get_fetches_allowed_hosts_with_limits(server_url: str) -> None:
    tools = http_tools(["127.0.0.1"], max_bytes=1000, timeout=0.5, use_env_proxies=False)
    assert tools.get("http_get").effects == {Effect.SENDS_OUTSIDE}
    hello = await tools.call(call("http_get", url=f"{server_url}/hello"))
    assert hello.value["status"] == 200 and hello.value["text"] == "hello world"
    assert hello.value["truncated"] is False
    big = await tools.call(call("http_get", url=f"{server_url}/big"))
    assert big.value["truncated"] is True and len(big.value["text"]) == 1000
    redirected = await tools.call(call("http_get", url=f"{server_url}/in"))
    assert redirected.value["text"] == "hello world"


@pytest.mark.parametrize(
    ("path", "kind", "message"),
    [
        ("/out", False, "host 'localhost' is not on the allow-list"),
        ("/busy", True, "HTTP 503"),
        ("/gone", False, "HTTP 404 Not Found"),
        ("/slow", True, "did not answer within 0.5 s"),
    ],
)
async def test_http_get_failures_are_contained(
    server_url: str, path: str, kind: bool, message: str
) -> None:
    tools = http_tools(["127.0.0.1"], timeout=0.5, use_env_proxies=False)
    result = await tools.call(call("http_get", url=f"{server_url}{path}"))
    assert result.error is not None and message in result.error["message"]
    assert result.error["retryable"] is kind


async def test_http_get_refuses_hosts_schemes_and_credentials(server_url: str) -> None:
    tools = http_tools(["127.0.0.1", "*.example.org"], use_env_proxies=False)
    for url, message in [
        ("http://localhost/", "host 'localhost' is not on the allow-list"),
        ("file:///etc/passwd", "only http and https"),
        ("http://user:pw@127.0.0.1/", "credentials"),
        ("http://example.org.evil.com/", "not on the allow-list"),
    ]:
        result = await tools.call(call("http_get", url=url))
        assert result.error is not None and message in result.error["message"], url
    allow = HostAllowList(["*.example.org"])
    assert allow.allows("docs.example.org") and not allow.allows("example.org")
    with pytest.raises(ValueError):
        HostAllowList([])


async def test_search_docs_wraps_a_retriever(tmp_path: Path) -> None:
    embedder = HashingEmbedder(64)
    store = SQLiteVectorStore(tmp_path / "memory.db", 64)
    texts = {
        "venus": "Venus has a thick carbon dioxide atmosphere and a hot surface.",
        "mars": "Mars is a cold desert planet with red dust.",
        "jupiter": "Jupiter is a gas giant with a great red spot.",
    }
    vectors = await embedder.embed(list(texts.values()))
    records = [
        VectorRecord(id=k, vector=v, text=t, metadata={"source": f"{k}.md"})
        for (k, t), v in zip(texts.items(), vectors, strict=True)
    ]
    await store.upsert("planets", records)
    try:
        tools = search_tools(Retriever(store, embedder), namespace="planets")
        registry = ToolRegistry().include(tools, calculator_tools())
        result = await registry.call(call("search_docs", query="atmosphere of Venus", k=2))
        assert result.ok and len(result.value) == 2
        assert result.value[0]["id"] == "venus" and result.value[0]["source"] == "venus.md"
        empty = await registry.call(call("search_docs", query="  "))
        assert empty.error is not None and "the query is empty" in empty.error["message"]
    finally:
        await store.close()
