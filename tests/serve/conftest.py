"""Shared setup for the service tests: a real service (SQLite stores, graph engine, trace store)
whose agents answer through deterministic test models, driven over HTTP in-process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from keel.graph import START, Graph, RunContext
from keel.graph.checkpoint.sqlite import SqliteCheckpointer
from keel.llm.testing import FunctionModel, ModelCall, tool_call
from keel.memory.testing import HashingEmbedder
from keel.observe import setup_tracing, shutdown_tracing
from keel.serve import AgentRegistry, DocQAAgent, GraphAgent, LoopAgent, Service
from keel.serve.app import create_app
from keel.serve.memory import TenantMemory
from keel.serve.sqlite import SqliteEventLog, SqliteKeyStore, SqliteRunRegistry
from keel.tools import ToolRegistry

SENT: list[str] = []


def echo(call: ModelCall) -> str:
    return f"echo: {call.last_user_text}"


def mailer(call: ModelCall) -> Any:
    """Asks to send one e-mail, then reports what the tool said."""
    last = call.messages[-1]
    if last.role == "tool":
        return f"done: {last.content}"
    return tool_call("send_email", to="ana@example.com", body=call.last_user_text)


def cited(call: ModelCall) -> str:
    return json.dumps({"statements": [{"text": "Venus is hot.", "source": 1}]})


class Gate(BaseModel):
    input: str = ""
    output: str = ""


GATES: dict[str, asyncio.Event] = {}


def gated_graph() -> Graph[Gate]:
    async def wait(state: Gate, ctx: RunContext) -> dict[str, Any]:
        ctx.emit("token", "waiting ")
        gate = GATES.setdefault(state.input, asyncio.Event())
        await gate.wait()
        return {"output": f"opened {state.input}"}

    graph = Graph(Gate, name="gated")
    graph.add_node("wait", wait)
    graph.add_edge(START, "wait")
    return graph


def tools() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    def send_email(to: str, body: str) -> str:
        """Send an e-mail."""
        SENT.append(to)
        return f"sent to {to}"

    return registry


def build_service(data: Path, *, max_body_bytes: int = 64_000) -> Service:
    def open_memory() -> tuple[HashingEmbedder, Any]:
        from keel.memory.sqlite_store import SQLiteVectorStore

        return HashingEmbedder(), SQLiteVectorStore(data / "memory.db", 256)

    memory = TenantMemory(
        open_memory,
        chunk_chars=400,
        chunk_overlap=40,
    )
    agents = AgentRegistry(
        [
            LoopAgent("echo", lambda: FunctionModel(echo), description="repeats you"),
            LoopAgent(
                "mailer",
                lambda: FunctionModel(mailer),
                tools(),
                approve=["send_email"],
                max_turns=3,
            ),
            DocQAAgent("docs", lambda: FunctionModel(cited), memory),
            GraphAgent("gated", gated_graph, "waits for the test"),
        ]
    )
    return Service(
        agents=agents,
        registry=SqliteRunRegistry(data / "serve.db"),
        events=SqliteEventLog(data / "serve.db"),
        keys=SqliteKeyStore(data / "keys.db"),
        checkpointer=SqliteCheckpointer(data / "serve-checkpoints.db"),
        memory=memory,
        traces=setup_tracing(data / "traces.db"),
        max_body_bytes=max_body_bytes,
        keepalive_s=0.5,
    )


class Api:
    """A test client of the service, with the API keys of two tenants."""

    def __init__(self, client: TestClient, service: Service, keys: dict[str, str]) -> None:
        self.client = client
        self.service = service
        self.keys = keys

    def headers(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def start(self, agent: str, input: Any, tenant: str = "acme") -> dict[str, Any]:
        r = self.client.post(
            "/v1/runs", json={"agent": agent, "input": input}, headers=self.headers(tenant)
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    def events(self, run_id: str, tenant: str = "acme", **headers: str) -> list[dict[str, Any]]:
        """Every SSE message of the run's stream until it ends: ``{"id", "event", "data"}``."""
        with self.client.stream(
            "GET", f"/v1/runs/{run_id}/events", headers={**self.headers(tenant), **headers}
        ) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            text = "".join(r.iter_text())
        messages = []
        for block in text.split("\n\n"):
            fields: dict[str, Any] = {}
            for line in block.splitlines():
                name, _, value = line.partition(": ")
                if name in ("id", "event", "data"):
                    fields[name] = json.loads(value) if name == "data" else value
            if fields:
                messages.append(fields)
        return messages

    def finish(self, run_id: str, tenant: str = "acme") -> dict[str, Any]:
        self.events(run_id, tenant)
        r = self.client.get(f"/v1/runs/{run_id}", headers=self.headers(tenant))
        assert r.status_code == 200, r.text
        return dict(r.json())


class SpecCheck:
    """Checks every response a test gets against the app's own OpenAPI spec: the status must be
    declared for the operation and a JSON body must validate against the declared schema."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import re

        self.spec = spec
        self.routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
            for path in spec["paths"]
        ]
        self.checked = 0

    def __call__(self, response: Any) -> None:
        from jsonschema import Draft202012Validator

        method = response.request.method.lower()
        path = response.request.url.path
        template = next((t for r, t in self.routes if r.match(path)), None)
        operation = self.spec["paths"].get(template or "", {}).get(method)
        if operation is None:  # no such route: the error body is still the one schema
            schema: dict[str, Any] = {"$ref": "#/components/schemas/ErrorBody"}
        else:
            declared = operation["responses"]
            assert str(response.status_code) in declared, (method, path, response.status_code)
            content = declared[str(response.status_code)].get("content", {})
            media = response.headers.get("content-type", "").split(";")[0]
            assert media in content, (method, path, media)
            if media != "application/json":
                return
            schema = content[media]["schema"]
        response.read()
        validator = Draft202012Validator({**schema, "components": self.spec["components"]})
        validator.validate(response.json())
        self.checked += 1


def make_keys(service: Service) -> dict[str, str]:
    async def create() -> dict[str, str]:
        return {t: (await service.keys.create(t))[1] for t in ("acme", "globex")}

    return asyncio.run(create())


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    SENT.clear()
    GATES.clear()
    service = build_service(tmp_path / "data")
    keys = make_keys(service)
    app = create_app(service)
    check = SpecCheck(app.openapi())
    with TestClient(app) as client:
        client.event_hooks = {"response": [check]}
        yield Api(client, service, keys)
    assert check.checked > 0
    shutdown_tracing()


class Live:
    """The service under a real uvicorn server on 127.0.0.1, in a thread of this process."""

    def __init__(self, base_url: str, service: Service, keys: dict[str, str]) -> None:
        self.base_url = base_url
        self.service = service
        self.keys = keys


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    import threading
    import time

    import httpx2
    import uvicorn

    SENT.clear()
    GATES.clear()
    service = build_service(tmp_path / "data")
    keys = make_keys(service)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    assert httpx2.get(f"{base}/healthz").status_code == 200
    yield Live(base, service, keys)
    server.should_exit = True
    thread.join(timeout=20)
    shutdown_tracing()
