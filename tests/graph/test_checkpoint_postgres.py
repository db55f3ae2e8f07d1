"""The PostgreSQL checkpointer against a real PostgreSQL server started for the test session."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import psycopg
import pytest
from pydantic import BaseModel, Field

from keel.errors import StoreError
from keel.graph import END, START, Graph, RunContext, append
from keel.graph.checkpoint import Checkpoint, Checkpointer
from keel.graph.checkpoint.conformance import CheckpointerConformance
from keel.graph.checkpoint.postgres import SCHEMA_VERSION, PostgresCheckpointer
from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401 - session fixture


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:  # noqa: F811 - the imported fixture
    return postgres_server.create_database("keel_checkpoints")


def fresh_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


class TestPostgresCheckpointer(CheckpointerConformance):
    @pytest.fixture
    async def checkpointer(self, pg_dsn: str) -> AsyncIterator[Checkpointer]:
        cp = PostgresCheckpointer(pg_dsn, schema=fresh_schema())
        yield cp
        await cp.aclose()

    @pytest.fixture
    def make_checkpointer(self, pg_dsn: str) -> Callable[..., Checkpointer]:
        return lambda **kw: PostgresCheckpointer(pg_dsn, schema=fresh_schema(), **kw)


async def test_schema_is_created_once_versioned_and_survives_reopening(pg_dsn: str) -> None:
    schema = fresh_schema()
    # Five checkpointers open the same new schema at once: the advisory lock serialises them.
    many = [PostgresCheckpointer(pg_dsn, schema=schema) for _ in range(5)]
    await asyncio.gather(*(cp.put_effect("r", f"k{i}", str(i)) for i, cp in enumerate(many)))
    for cp in many:
        await cp.aclose()
    again = PostgresCheckpointer(pg_dsn, schema=schema)
    assert [await again.get_effect("r", f"k{i}") for i in range(5)] == ["0", "1", "2", "3", "4"]
    await again.aclose()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT component, version FROM {schema}.keel_schema_versions")
        assert rows.fetchall() == [("graph_checkpoints", SCHEMA_VERSION)]


async def test_a_newer_schema_version_is_refused(pg_dsn: str) -> None:
    schema = fresh_schema()
    cp = PostgresCheckpointer(pg_dsn, schema=schema)
    await cp.put(Checkpoint("r", 0, "{}"))
    await cp.aclose()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.keel_schema_versions SET version = 99")
    newer = PostgresCheckpointer(pg_dsn, schema=schema)
    with pytest.raises(StoreError, match="version 99, newer than"):
        await newer.latest("r")
    await newer.aclose()


async def test_concurrent_writers_on_the_same_rows(pg_dsn: str) -> None:
    schema = fresh_schema()
    a = PostgresCheckpointer(pg_dsn, schema=schema, keep_last=5)
    b = PostgresCheckpointer(pg_dsn, schema=schema, keep_last=5)

    async def writer(cp: PostgresCheckpointer, tag: str) -> None:
        for step in range(30):
            await cp.put(Checkpoint("shared", step, f'"{tag}{step}"'))
            await cp.put_effect("shared", f"effect{step}", f'"{tag}"')

    await asyncio.gather(writer(a, "a"), writer(b, "b"))
    history = await a.history("shared")
    assert [c.step for c in history] == [29, 28, 27, 26, 25]
    assert all(c.state in (f'"a{c.step}"', f'"b{c.step}"') for c in history)
    # Exactly one writer won each effect key, and both see the same winner.
    for step in range(30):
        seen_a = await a.get_effect("shared", f"effect{step}")
        assert seen_a in ('"a"', '"b"')
        assert await b.get_effect("shared", f"effect{step}") == seen_a
    await a.aclose()
    await b.aclose()


class Counter(BaseModel):
    n: int = 0
    log: Annotated[list[str], append] = Field(default_factory=list)


def counting_graph(limit: int, executed: list[str]) -> Graph[Counter]:
    def record(label: str) -> str:
        executed.append(label)
        return label

    async def tick(state: Counter, ctx: RunContext) -> dict[str, Any]:
        label = await ctx.effect(record, f"{ctx.run_id}:{state.n}")
        await asyncio.sleep(0)  # let the other run interleave its writes
        return {"n": state.n + 1, "log": [label]}

    g = Graph(Counter)
    g.add_node("tick", tick)
    g.add_edge(START, "tick")
    g.add_conditional_edges("tick", lambda s: "tick" if s.n < limit else END, ["tick", END])
    return g


async def test_two_graph_runs_in_parallel_and_resume_elsewhere(pg_dsn: str) -> None:
    schema = fresh_schema()
    executed: list[str] = []
    first = PostgresCheckpointer(pg_dsn, schema=schema)
    second = PostgresCheckpointer(pg_dsn, schema=schema)
    runs = await asyncio.gather(
        counting_graph(20, executed).compile(checkpointer=first).run({}, run_id="left"),
        counting_graph(20, executed).compile(checkpointer=second).run({}, run_id="right"),
    )
    assert [r.state.n for r in runs] == [20, 20]
    assert runs[0].state.log == [f"left:{i}" for i in range(20)]
    assert runs[1].state.log == [f"right:{i}" for i in range(20)]
    assert len(executed) == 40
    assert len(await first.history("right")) == len(await second.history("left")) > 20
    # A third checkpointer (as in another process) resumes a finished run without re-executing.
    third = PostgresCheckpointer(pg_dsn, schema=schema)
    again = await counting_graph(20, executed).compile(checkpointer=third).resume("left")
    assert again.state.n == 20
    assert len(executed) == 40
    for cp in (first, second, third):
        await cp.aclose()


async def test_reconnects_after_the_connection_is_lost(pg_dsn: str) -> None:
    cp = PostgresCheckpointer(pg_dsn, schema=fresh_schema())
    await cp.put(Checkpoint("r", 0, "{}"))
    assert cp._conn is not None
    pid = cp._conn.info.backend_pid
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await cp.put(Checkpoint("r", 1, "{}"))
    assert [c.step for c in await cp.history("r")] == [1, 0]
    assert cp._conn is not None and cp._conn.info.backend_pid != pid
    await cp.aclose()


def test_one_checkpointer_serves_successive_event_loops(pg_dsn: str) -> None:
    cp = PostgresCheckpointer(pg_dsn, schema=fresh_schema())

    async def three_at_once(first: int) -> None:  # contended: binds locks to the running loop
        await asyncio.gather(*(cp.put(Checkpoint("r", first + i, "{}")) for i in range(3)))

    asyncio.run(three_at_once(0))
    asyncio.run(three_at_once(3))
    assert [c.step for c in asyncio.run(cp.history("r"))] == [5, 4, 3, 2, 1, 0]
    asyncio.run(cp.aclose())


async def test_ttl_prunes_when_the_store_is_opened(pg_dsn: str) -> None:
    schema = fresh_schema()
    cp = PostgresCheckpointer(pg_dsn, schema=schema)
    await cp.put(Checkpoint("r", 0, "{}", created_at=1.0))
    await cp.put(Checkpoint("r", 1, "{}"))
    await cp.aclose()
    with_ttl = PostgresCheckpointer(pg_dsn, schema=schema, ttl=3600)
    assert [c.step for c in await with_ttl.history("r")] == [1]
    await with_ttl.aclose()


async def test_failures_are_store_errors_without_the_password(
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    secret = postgres_server.password
    wrong = postgres_server.conninfo("keel_checkpoints", password=False) + " password=wrong-pw-1"
    cp = PostgresCheckpointer(wrong)
    with pytest.raises(StoreError, match="cannot connect") as info:
        await cp.latest("r")
    assert "wrong-pw-1" not in str(info.value)
    assert "password authentication failed" in str(info.value)

    url = postgres_server.url("keel_checkpoints")
    with pytest.raises(StoreError, match="invalid PostgreSQL connection string") as bad:
        PostgresCheckpointer(url + "?garbage")
    assert secret not in str(bad.value)
    assert secret not in repr(PostgresCheckpointer(url))

    closed_port = postgres_server.url("nowhere").replace(f":{postgres_server.port}/", ":1/")
    unreachable = PostgresCheckpointer(closed_port, connect_timeout=2)
    with pytest.raises(StoreError, match="cannot connect") as down:
        await unreachable.put_effect("r", "k", "1")
    assert secret not in str(down.value)

    ok = PostgresCheckpointer(url, schema=fresh_schema())
    await ok.put(Checkpoint("r", 0, "{}"))
    await ok.aclose()
    with pytest.raises(StoreError, match="closed"):
        await ok.latest("r")


async def test_server_side_errors_are_store_errors(pg_dsn: str) -> None:
    cp = PostgresCheckpointer(pg_dsn, schema=fresh_schema())
    with pytest.raises(StoreError, match=r"cannot save a checkpoint.*status"):
        await cp.put(Checkpoint("r", 0, "{}", status="lost"))  # type: ignore[arg-type]
    await cp.aclose()


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="keep_last"):
        PostgresCheckpointer("dbname=x", keep_last=0)
    with pytest.raises(ValueError, match="ttl"):
        PostgresCheckpointer("dbname=x", ttl=0)
    with pytest.raises(ValueError, match="schema"):
        PostgresCheckpointer("dbname=x", schema='x"; DROP TABLE y; --')
