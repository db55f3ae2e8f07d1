"""API keys and tenants: keys are stored hashed, and no tenant sees another's data."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from conftest import Api


def test_requests_without_a_valid_key_are_401(api: Api) -> None:
    for headers in [{}, {"Authorization": "Bearer keel_nope_nope"}, {"Authorization": "Basic x"}]:
        r = api.client.get("/v1/runs", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_stops_working(api: Api) -> None:
    assert api.client.get("/v1/runs", headers=api.headers("globex")).status_code == 200
    (key,) = asyncio.run(api.service.keys.list_keys("globex"))
    assert api.client.portal is not None
    assert api.client.portal.call(api.service.keys.revoke, key.id)
    assert api.client.get("/v1/runs", headers=api.headers("globex")).status_code == 401


def test_keys_are_stored_only_as_hashes_and_never_recorded(api: Api, tmp_path: Path) -> None:
    api.finish(api.start("echo", "hello")["id"])  # requests and a run with the key
    raw = (tmp_path / "data" / "keys.db").read_bytes()
    with sqlite3.connect(tmp_path / "data" / "keys.db") as db:
        raw += b"".join(str(r).encode() for r in db.execute("SELECT * FROM api_keys"))
    for name in ("serve.db", "traces.db", "serve-checkpoints.db"):
        for path in (tmp_path / "data").glob(name + "*"):  # with the WAL files
            raw += path.read_bytes()
    for secret in api.keys.values():
        assert secret.encode() not in raw
        assert secret.split("_")[-1].encode() not in raw


def test_a_tenant_cannot_see_another_tenants_runs(api: Api) -> None:
    started = api.start("echo", "acme's secret plan")
    api.finish(started["id"])
    rid = started["id"]
    for method, path in [
        ("GET", f"/v1/runs/{rid}"),
        ("GET", f"/v1/runs/{rid}/events"),
        ("POST", f"/v1/runs/{rid}/cancel"),
    ]:
        r = api.client.request(method, path, headers=api.headers("globex"))
        assert r.status_code == 404, path
        assert "secret plan" not in r.text
    listed = api.client.get("/v1/runs", headers=api.headers("globex")).json()["data"]
    assert listed == []
    mine = api.client.get("/v1/runs", headers=api.headers("acme")).json()["data"]
    assert [r["id"] for r in mine] == [rid]
    # the data layer itself filters by tenant
    assert asyncio.run(api.service.registry.get("globex", rid)) is None


def test_a_tenant_cannot_see_another_tenants_traces(api: Api) -> None:
    started = api.start("echo", "traced")
    done = api.finish(started["id"])
    (trace_id,) = done["trace_ids"]
    mine = api.client.get("/v1/traces", headers=api.headers("acme")).json()["data"]
    assert [t["trace_id"] for t in mine] == [trace_id]
    detail = api.client.get(f"/v1/traces/{trace_id}", headers=api.headers("acme"))
    assert detail.status_code == 200
    names = [s["name"] for s in detail.json()["spans"]]
    assert names[0] == "keel.serve.run echo" and "invoke_agent echo" in names
    assert api.client.get("/v1/traces", headers=api.headers("globex")).json()["data"] == []
    theirs = api.client.get(f"/v1/traces/{trace_id}", headers=api.headers("globex"))
    assert theirs.status_code == 404


def test_memory_namespaces_are_per_tenant(api: Api) -> None:
    doc = {"source": "venus.md", "text": "# Venus\n\nVenus is hot: 465 degrees at the surface."}
    r = api.client.post(
        "/v1/memory/docs/documents", json={"documents": [doc]}, headers=api.headers("acme")
    )
    assert r.status_code == 200 and r.json()["chunks"] == 1
    query = {"query": "how hot is venus", "k": 3}
    mine = api.client.post("/v1/memory/docs/search", json=query, headers=api.headers("acme"))
    assert [h["metadata"]["source"] for h in mine.json()["hits"]] == ["venus.md"]
    theirs = api.client.post("/v1/memory/docs/search", json=query, headers=api.headers("globex"))
    assert theirs.status_code == 200 and theirs.json()["hits"] == []
    # the docs agent answers each tenant from that tenant's namespace only
    answered = api.finish(api.start("docs", "How hot is Venus?", "acme")["id"], "acme")
    assert answered["output"] == "Venus is hot. [1]"
    assert answered["state"]["citations"][0]["source"] == "venus.md"
    empty = api.finish(api.start("docs", "How hot is Venus?", "globex")["id"], "globex")
    assert empty["status"] == "done" and empty["output"] == ""


def test_a_namespace_name_cannot_escape_the_tenant(api: Api) -> None:
    for name in ["tenant:acme:docs", "..", "ACME", "a/b"]:
        r = api.client.post(
            f"/v1/memory/{name}/search", json={"query": "venus"}, headers=api.headers("globex")
        )
        assert r.status_code in (404, 422), name
