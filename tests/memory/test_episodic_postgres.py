"""The PostgreSQL episodic store against a real server: the conformance suite and its own cases."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import psycopg
import pytest
from episodic_conformance import T0, EpisodicStoreConformance, OpenEpisodicStore, run

from keel.errors import StoreError
from keel.memory.episodic import RetentionPolicy, RunQuery, RunRecord, StepRecord, ToolCallRecord
from keel.memory.episodic_postgres import SCHEMA_VERSION, PostgresEpisodicStore
from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401 - session fixture


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:  # noqa: F811 - the imported fixture
    return postgres_server.create_database("keel_episodes")


def fresh_schema() -> str:
    return f"e_{uuid.uuid4().hex[:12]}"


class TestPostgresEpisodicStore(EpisodicStoreConformance):
    @pytest.fixture
    def open_store(self, pg_dsn: str) -> OpenEpisodicStore:
        schema = fresh_schema()
        return lambda: PostgresEpisodicStore(pg_dsn, schema=schema)


async def test_odd_text_round_trips_and_the_table_is_versioned(pg_dsn: str) -> None:
    schema = fresh_schema()
    store = PostgresEpisodicStore(pg_dsn, schema=schema)
    odd = "NUL \x00 byte, emoji \U0001f600, quote ' and backslash \\"
    original = RunRecord(
        run_id="odd",
        session_id="s",
        agent="a",
        steps=[
            StepRecord(
                kind="tool",
                tool_calls=[ToolCallRecord(name="t", arguments={"x": odd}, result=odd)],
                started_at=T0,
            )
        ],
        started_at=T0,
    )
    await store.record(original)
    assert await store.get("odd") == original
    await store.close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT component, version FROM {schema}.keel_schema_versions")
        assert rows.fetchall() == [("episodic_runs", SCHEMA_VERSION)]


async def test_concurrent_writers_and_retention(pg_dsn: str) -> None:
    schema = fresh_schema()
    stores = [PostgresEpisodicStore(pg_dsn, schema=schema) for _ in range(3)]
    await asyncio.gather(
        *(
            store.record(run(f"r{n}-{i}", i, agent=f"agent{n}"))
            for n, store in enumerate(stores)
            for i in range(10)
        )
    )
    now = T0 + timedelta(minutes=20)
    deleted = await stores[0].apply_retention(
        RetentionPolicy(max_age=timedelta(minutes=15), max_runs_per_agent=2), now
    )
    assert deleted == 3 * 8
    left = await stores[1].query(RunQuery())
    assert sorted(r.run_id for r in left) == sorted(f"r{n}-{i}" for n in range(3) for i in (8, 9))
    with pytest.raises(ValueError, match="time zone"):
        await stores[0].apply_retention(RetentionPolicy(), now.replace(tzinfo=None))
    for store in stores:
        await store.close()


async def test_a_closed_store_and_a_bad_server_are_store_errors(
    pg_dsn: str,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    store = PostgresEpisodicStore(pg_dsn, schema=fresh_schema())
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.record(run("r", 0))
    bad = PostgresEpisodicStore(
        postgres_server.conninfo("no_such_database", password=False)
        + f" password={postgres_server.password}"
    )
    with pytest.raises(StoreError, match="cannot connect") as caught:
        await bad.get("r")
    assert postgres_server.password not in str(caught.value)
    await bad.close()
