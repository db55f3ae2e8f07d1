"""The response cache in the service is namespaced per tenant: a tenant's repeated question is
answered from the cache, another tenant's same question is not answered from the first's."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi.testclient import TestClient

from keel.budget import BudgetedModel
from keel.cache.sqlite_backend import SQLiteCacheBackend
from keel.config import KeelSettings
from keel.llm.testing import FunctionModel, ModelCall
from keel.serve import LoopAgent, Service
from keel.serve.app import create_app
from keel.serve.tenancy import TenantCachedModel, tenant_cached


def test_cached_answers_are_never_served_to_another_tenant(tmp_path: Path) -> None:
    settings = KeelSettings(
        data_dir=tmp_path / "data",
        serve={"docs_agent": False},  # type: ignore[arg-type]
        cache={"enabled": True, "backend": "sqlite"},  # type: ignore[arg-type]
    )

    def secret(call: ModelCall) -> str:
        return f"answer #{len(model.calls)} to {call.last_user_text}"

    model = FunctionModel(secret)
    cached = tenant_cached(BudgetedModel(model), settings, default_temperature=0.0)
    assert isinstance(cached, TenantCachedModel)
    service = Service.from_settings(
        settings, agents=[LoopAgent("echo", lambda: cached)], tracing=False
    )

    async def create() -> dict[str, str]:
        return {t: (await service.keys.create(t))[1] for t in ("acme", "globex")}

    keys = asyncio.run(create())

    def ask(client: TestClient, tenant: str) -> str:
        body = {"model": "echo", "messages": [{"role": "user", "content": "the plan?"}]}
        headers = {"Authorization": f"Bearer {keys[tenant]}"}
        r = client.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text
        return str(r.json()["choices"][0]["message"]["content"])

    with TestClient(create_app(service)) as client:
        first = ask(client, "acme")
        assert ask(client, "acme") == first and len(model.calls) == 1  # a hit
        other = ask(client, "globex")
        assert len(model.calls) == 2 and other != first  # globex's own call, not acme's answer
        assert ask(client, "globex") == other and len(model.calls) == 2
        assert ask(client, "acme") == first and len(model.calls) == 2
    assert cached.counters.exact_hits == 3

    async def namespaces() -> dict[str, int]:
        backend = SQLiteCacheBackend(settings.cache_path)
        try:
            return {n.namespace: n.entries for n in (await backend.stats()).namespaces}
        finally:
            await backend.close()

    assert asyncio.run(namespaces()) == {"default:tenant:acme": 1, "default:tenant:globex": 1}
    # outside a run (no tenant) the configured namespace applies
    assert cached.namespace == "default"


def test_configured_agents_get_the_tenant_cache_outside_the_budget(tmp_path: Path) -> None:
    from keel.serve.agents import LoopAgent as Loop
    from keel.serve.agents import agents_from_settings
    from keel.serve.memory import TenantMemory

    def no_memory() -> tuple[object, object]:
        raise AssertionError("not opened")

    agents = {"a": {"kind": "agent", "model": "ollama:llama3"}}
    settings = KeelSettings(
        data_dir=tmp_path,
        cache={"enabled": True},  # type: ignore[arg-type]
        serve={"docs_agent": False, "agents": agents},  # type: ignore[arg-type]
    )
    agent = agents_from_settings(settings, TenantMemory(no_memory))  # type: ignore[arg-type]
    loop = agent.get("a")
    assert isinstance(loop, Loop)
    model = loop._model()
    # one cache layer, per tenant, over the budgeted model (a hit spends no budget)
    assert isinstance(model, TenantCachedModel) and isinstance(model.wrapped, BudgetedModel)
    assert not isinstance(model.wrapped.wrapped, TenantCachedModel)
    off = settings.model_copy(
        update={"cache": settings.cache.model_copy(update={"enabled": False})}
    )
    plain = agents_from_settings(off, TenantMemory(no_memory)).get("a")  # type: ignore[arg-type]
    assert isinstance(plain, Loop) and isinstance(plain._model(), BudgetedModel)
