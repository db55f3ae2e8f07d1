"""Per-tenant budgets in the service: every run is metered (run, tenant-day), a run over its
budget fails with a ``budget_exceeded`` error and keeps its checkpoint, and ``GET /v1/budget``
shows the calling tenant its own spend only."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keel.budget import BudgetedModel
from keel.config import KeelSettings
from keel.llm.messages import AssistantMessage, Response, TextPart, Usage
from keel.llm.testing import FunctionModel, ModelCall, tool_call
from keel.serve import LoopAgent, Service
from keel.serve.app import create_app
from keel.tools import ToolRegistry

CALLS: list[str] = []


def spender(call: ModelCall) -> Any:
    """Looks something up, over and over, spending 400 tokens a call."""
    CALLS.append(call.last_user_text)
    if call.last_user_text.startswith("loop"):
        message = AssistantMessage(parts=(tool_call("lookup", query="x"),))
        finish = "tool_calls"
    else:
        message = AssistantMessage(parts=(TextPart(text="short answer"),))
        finish = "stop"
    usage = Usage(input_tokens=300, output_tokens=100, requests=1)
    return Response(message=message, usage=usage, model_name="spender", finish_reason=finish)


def lookups() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    def lookup(query: str) -> str:
        """Look something up."""
        return "nothing new"

    return registry


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A real redis-server on a free port, for the shared ledger."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian package redis-server; see Makefile)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "no redis-server"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


class Client:
    def __init__(self, client: TestClient, service: Service, keys: dict[str, str]) -> None:
        self.client, self.service, self.keys = client, service, keys

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def budget(self, tenant: str) -> dict[str, Any]:
        r = self.client.get("/v1/budget", headers=self.headers(tenant))
        assert r.status_code == 200, r.text
        return dict(r.json())


def build(settings: KeelSettings) -> Service:
    agent = LoopAgent(
        "spender",
        lambda: BudgetedModel(FunctionModel(spender, name="spender"), max_tokens=50),
        lookups(),
        max_turns=8,
    )
    return Service.from_settings(settings, agents=[agent], tracing=False)


def make_keys(service: Service) -> dict[str, str]:
    async def create() -> dict[str, str]:
        return {t: (await service.keys.create(t))[1] for t in ("acme", "globex")}

    return asyncio.run(create())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Client]:
    CALLS.clear()
    settings = KeelSettings(
        data_dir=tmp_path / "data",
        serve={"docs_agent": False},  # type: ignore[arg-type]
        budget={  # type: ignore[arg-type]
            "run": {"total_tokens": 1000},
            "tenant_day": {"total_tokens": 5000},
            "tenants": {"globex": {"total_tokens": 30}},
        },
    )
    service = build(settings)
    keys = make_keys(service)
    with TestClient(create_app(service)) as client:
        yield Client(client, service, keys)


def test_a_run_over_its_budget_fails_with_the_scope_and_keeps_its_checkpoint(
    served: Client,
) -> None:
    api = served
    r = api.client.post(
        "/v1/runs", json={"agent": "spender", "input": "loop please"}, headers=api.headers("acme")
    )
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    with api.client.stream(
        "GET", f"/v1/runs/{run_id}/events", headers=api.headers("acme")
    ) as events:
        text = "".join(events.iter_text())
    run = api.client.get(f"/v1/runs/{run_id}", headers=api.headers("acme")).json()
    assert run["status"] == "failed"
    assert run["error"].startswith("budget_exceeded: budget run:" + run_id)
    assert "total_tokens" in run["error"]
    assert '"type": "budget_exceeded"' in text or '"type":"budget_exceeded"' in text
    assert 2 <= len(CALLS) < 8  # stopped by the budget, not by max_turns
    checkpoint = asyncio.run(api.service.checkpointer.latest(run_id))
    assert checkpoint is not None and checkpoint.status != "done"

    # acme's spend is in acme's budget, and only there
    acme = api.budget("acme")
    assert acme["tenant"] == "acme" and acme["metered"] is True
    assert acme["scope"] == f"tenant:acme@{acme['day']}"
    assert acme["used"]["total_tokens"] == 400 * len(CALLS)
    assert acme["limits"] == {"total_tokens": 5000}
    assert acme["remaining"]["total_tokens"] == 5000 - 400 * len(CALLS)
    globex = api.budget("globex")
    assert globex["tenant"] == "globex" and "acme" not in globex["scope"]
    assert globex["used"]["total_tokens"] == 0 and globex["used"]["model_calls"] == 0
    assert globex["limits"] == {"total_tokens": 30}


def test_a_tenant_override_stops_chat_completions_and_spares_other_tenants(
    served: Client,
) -> None:
    api = served
    body = {"model": "spender", "messages": [{"role": "user", "content": "hello"}]}
    refused = api.client.post("/v1/chat/completions", json=body, headers=api.headers("globex"))
    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert error["type"] == "budget_exceeded"
    assert "tenant:globex@" in error["message"] and "total_tokens" in error["message"]
    assert CALLS == []  # refused before the model was called
    assert api.budget("globex")["used"]["total_tokens"] == 0

    ok = api.client.post("/v1/chat/completions", json=body, headers=api.headers("acme"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"] == "short answer"
    assert api.budget("acme")["used"]["total_tokens"] == 400
    assert api.budget("globex")["used"]["total_tokens"] == 0


def test_the_budget_needs_a_key(served: Client) -> None:
    assert served.client.get("/v1/budget").status_code == 401


def test_two_services_on_one_redis_ledger_share_a_tenants_day_budget(
    tmp_path: Path,
    redis_port: int,
) -> None:
    """Two processes' services (own stores, one shared ledger): acme's spend on the first counts
    against acme's day on the second."""
    CALLS.clear()
    url = f"redis://127.0.0.1:{redis_port}/5"
    clients = []
    for name in ("one", "two"):
        settings = KeelSettings(
            data_dir=tmp_path / name,
            serve={"docs_agent": False},  # type: ignore[arg-type]
            budget={"tenant_day": {"total_tokens": 500}},  # type: ignore[arg-type]
            shared={"redis_url": url},  # type: ignore[arg-type]
        )
        assert settings.budget.ledger == "redis"
        service = build(settings)
        clients.append((service, make_keys(service)))
    body = {"model": "spender", "messages": [{"role": "user", "content": "hello"}]}
    (one, keys_one), (two, keys_two) = clients
    with TestClient(create_app(one)) as first, TestClient(create_app(two)) as second:
        ok = first.post(
            "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {keys_one['acme']}"},
        )
        assert ok.status_code == 200, ok.text
        api_two = Client(second, two, keys_two)
        assert api_two.budget("acme")["used"]["total_tokens"] == 400
        refused = second.post("/v1/chat/completions", json=body, headers=api_two.headers("acme"))
        assert refused.status_code == 502 and refused.json()["error"]["type"] == "budget_exceeded"
        assert "tenant:acme@" in refused.json()["error"]["message"]
        assert len(CALLS) == 1
        other = second.post("/v1/chat/completions", json=body, headers=api_two.headers("globex"))
        assert other.status_code == 200, other.text
        assert api_two.budget("globex")["used"]["total_tokens"] == 400
