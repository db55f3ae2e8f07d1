"""The service's stores behave the same on SQLite and on a real PostgreSQL server: tenant
isolation in every read, event numbering, hashed keys; and the PostgreSQL-only parts that let
several processes share them (atomic changes, run leases, change notifications)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keel.errors import ServeError
from keel.serve.base import EventLog, KeyStore, RunRecord, RunRegistry, StoredEvent
from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401


@dataclass
class Stores:
    kind: str
    runs: RunRegistry
    events: EventLog
    keys: KeyStore


_schemas = iter(range(10_000))


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "sqlite":
        from keel.serve.sqlite import SqliteEventLog, SqliteKeyStore, SqliteRunRegistry

        made = Stores(
            "sqlite",
            SqliteRunRegistry(tmp_path / "serve.db"),
            SqliteEventLog(tmp_path / "serve.db"),
            SqliteKeyStore(tmp_path / "keys.db"),
        )
    else:
        from keel.serve.postgres import PostgresEventLog, PostgresKeyStore, PostgresRunRegistry

        server: PostgresServer = request.getfixturevalue("postgres_server")
        dsn = server.conninfo("postgres")
        schema = f"serve_conf_{next(_schemas)}_{int(time.time() * 1000) % 100_000}"
        made = Stores(
            "postgres",
            PostgresRunRegistry(dsn, schema=schema),
            PostgresEventLog(dsn, schema=schema),
            PostgresKeyStore(dsn, schema=schema),
        )
    yield made
    for store in (made.runs, made.events, made.keys):
        await store.aclose()


def record(run_id: str, tenant: str, agent: str = "echo", at: float = 0.0) -> RunRecord:
    now = at or time.time()
    return RunRecord(
        id=run_id, tenant=tenant, agent=agent, input={"q": run_id}, created_at=now, updated_at=now
    )


async def test_runs_are_read_only_by_their_tenant(stores: Stores) -> None:
    runs = stores.runs
    await runs.create(record("r1", "acme", at=1.0))
    await runs.create(record("r2", "acme", agent="docs", at=2.0))
    await runs.create(record("r3", "globex", at=3.0))
    assert (await runs.get("acme", "r1")) is not None
    assert await runs.get("globex", "r1") is None
    assert [r.id for r in await runs.list_runs("acme")] == ["r2", "r1"]
    assert [r.id for r in await runs.list_runs("acme", agent="docs")] == ["r2"]
    assert [r.id for r in await runs.list_runs("globex")] == ["r3"]
    updated = await runs.update("r1", status="done", output="hi", trace_ids=["t1"])
    assert (updated.status, updated.output, updated.input) == ("done", "hi", {"q": "r1"})
    assert [r.id for r in await runs.list_runs("acme", status="done")] == ["r1"]
    assert [r.id for r in await runs.unfinished()] == ["r2", "r3"]
    assert await runs.trace_ids("acme") == ["t1"]
    assert await runs.trace_ids("globex") == []
    assert await runs.has_trace("acme", "t1")
    assert not await runs.has_trace("globex", "t1")
    with pytest.raises(ValueError):
        await runs.update("r1", tenant="globex")


async def test_modify_applies_a_change_atomically_and_only_for_the_tenant(stores: Stores) -> None:
    runs = stores.runs
    await runs.create(record("r1", "acme"))
    assert await runs.modify("globex", "r1", lambda r: {"status": "done"}) is None

    async def add(n: int) -> None:
        await runs.modify("acme", "r1", lambda r: {"answers": {**r.answers, f"k{n}": n}})

    await asyncio.gather(*(add(n) for n in range(5)))
    found = await runs.get("acme", "r1")
    assert found is not None and found.answers == {f"k{n}": n for n in range(5)}

    def refuse(r: RunRecord) -> dict[str, Any]:
        raise ServeError("no")

    with pytest.raises(ServeError):
        await runs.modify("acme", "r1", refuse)


async def test_events_are_numbered_per_run_and_read_after_a_point(stores: Stores) -> None:
    log = stores.events
    for n in range(3):
        stored = await log.append("a", StoredEvent(seq=0, kind="x", step=n, time=time.time()))
        assert stored.seq == n + 1
    await log.append("b", StoredEvent(seq=0, kind="y", step=0, data={"k": 1}, time=time.time()))
    assert [e.seq for e in await log.read("a")] == [1, 2, 3]
    assert [e.step for e in await log.read("a", after=1, limit=1)] == [1]
    (only,) = await log.read("b")
    assert (only.seq, only.data) == (1, {"k": 1})


async def test_keys_are_hashed_verified_listed_and_revoked(stores: Stores) -> None:
    keys = stores.keys
    made, secret = await keys.create("acme", "ci")
    await keys.create("globex")
    assert (await keys.verify(secret)) == made
    assert await keys.verify(secret[:-1] + ("x" if secret[-1] != "x" else "y")) is None
    assert await keys.verify("nonsense") is None
    assert [k.tenant for k in await keys.list_keys()] == ["acme", "globex"]
    assert [k.id for k in await keys.list_keys("acme")] == [made.id]
    assert await keys.revoke(made.id)
    assert await keys.verify(secret) is None
    assert not await keys.revoke("missing")
    with pytest.raises(ServeError):
        await keys.create("Not A Tenant")


async def test_a_lease_is_held_by_one_owner_until_it_lapses(stores: Stores) -> None:
    if stores.kind != "postgres":
        pytest.skip("one process: the SQLite registry needs no leases")
    runs = stores.runs
    await runs.create(record("r1", "acme"))
    assert [r.id for r in await runs.claimable()] == ["r1"]
    assert await runs.claim("r1", "A", 0.3)
    assert not await runs.claim("r1", "B", 0.3)
    assert await runs.claimable() == []
    assert await runs.renew("A", ["r1"], 0.3) == ["r1"]
    assert await runs.renew("B", ["r1"], 0.3) == []
    await asyncio.sleep(0.4)  # A stopped renewing: its lease lapses
    assert [r.id for r in await runs.claimable()] == ["r1"]
    assert await runs.claim("r1", "B", 30)
    assert await runs.renew("A", ["r1"], 30) == []  # A learns it lost the run
    await runs.release("r1", "A")  # not A's to release
    assert not await runs.claim("r1", "A", 30)
    await runs.release("r1", "B")
    assert await runs.claim("r1", "A", 30)
    await runs.update("r1", status="cancelled")
    assert await runs.renew("A", ["r1"], 30) == []  # cancelled elsewhere: stop driving it


async def test_changes_are_announced_to_listeners(stores: Stores) -> None:
    if stores.kind != "postgres":
        pytest.skip("one process: the SQLite log has no other process to hear from")
    heard: list[str] = []
    got = asyncio.Event()

    def hear(run_id: str) -> None:
        heard.append(run_id)
        got.set()

    await stores.events.listen(hear)
    await stores.events.append("r9", StoredEvent(seq=0, kind="x", step=0, time=time.time()))
    await asyncio.wait_for(got.wait(), timeout=10)
    assert heard == ["r9"]
    got.clear()
    await stores.runs.create(record("r8", "acme"))
    await stores.runs.update("r8", status="done")
    await asyncio.wait_for(got.wait(), timeout=10)
    assert heard[-1] == "r8"
