"""An ``EpisodicStore`` on PostgreSQL, for run records shared by several processes or hosts.

Each run is one row of ``schema.episodic_runs``: the record as JSON text (text, not JSONB, so
every string a tool returned round-trips exactly), plus the columns queries filter on (session,
agent, outcome, ``started_at`` as ``timestamptz``), indexed. Writes are single statements or one
transaction, so any number of stores may write at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from keel.memory.episodic import EpisodicStore, RetentionPolicy, RunQuery, RunRecord
from keel.memory.pg_connection import (  # raises MissingDependencyError without psycopg
    AsyncConn,
    PgConnection,
    check_identifier,
    sql,
    stamp_version,
)

__all__ = ["SCHEMA_VERSION", "PostgresEpisodicStore"]

SCHEMA_VERSION = 1
"""The version of the table layout this module writes."""

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    run_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure', 'running')),
    started_at TIMESTAMPTZ NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS episodic_runs_session ON {table} (session_id, started_at);
CREATE INDEX IF NOT EXISTS episodic_runs_agent ON {table} (agent, started_at);
CREATE INDEX IF NOT EXISTS episodic_runs_started ON {table} (started_at);
"""


class PostgresEpisodicStore(EpisodicStore):
    """Run records in PostgreSQL, in the table ``episodic_runs`` of ``schema`` (created on first
    use). ``dsn`` is a libpq connection string or ``postgresql://`` URL; keep the password out of
    it (``PGPASSWORD`` or a passfile)."""

    def __init__(self, dsn: str, *, schema: str = "keel", connect_timeout: float = 10.0) -> None:
        self.schema = check_identifier("schema", schema)
        self._t = sql.SQL("{}.episodic_runs").format(sql.Identifier(schema))
        self._pg = PgConnection(
            dsn,
            what="PostgreSQL episodic store",
            application_name="keel-episodic",
            setup=self._create,
            connect_timeout=connect_timeout,
        )

    @property
    def where(self) -> str:
        """The server and database, without credentials."""
        return self._pg.where

    def __repr__(self) -> str:
        return f"PostgresEpisodicStore({self.where!r}, schema={self.schema!r})"

    async def record(self, run: RunRecord) -> None:
        statement = sql.SQL(
            "INSERT INTO {} (run_id, session_id, agent, outcome, started_at, record) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET "
            "session_id = EXCLUDED.session_id, agent = EXCLUDED.agent, "
            "outcome = EXCLUDED.outcome, started_at = EXCLUDED.started_at, "
            "record = EXCLUDED.record"
        ).format(self._t)
        row = (
            run.run_id,
            run.session_id,
            run.agent,
            run.outcome or "running",
            run.started_at,
            run.model_dump_json(),
        )

        async def op(conn: AsyncConn) -> None:
            await conn.execute(statement, row)

        await self._pg.run("record a run", op)

    async def get(self, run_id: str) -> RunRecord | None:
        statement = sql.SQL("SELECT record FROM {} WHERE run_id = %s").format(self._t)

        async def op(conn: AsyncConn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(statement, (run_id,))).fetchall()

        rows = await self._pg.run("read a run", op)
        return RunRecord.model_validate_json(rows[0][0]) if rows else None

    async def query(self, query: RunQuery) -> list[RunRecord]:
        clauses: list[sql.Composable] = []
        params: list[object] = []
        for column, value in (
            ("session_id", query.session_id),
            ("agent", query.agent),
            ("outcome", query.outcome),
        ):
            if value is not None:
                clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if query.since is not None:
            clauses.append(sql.SQL("started_at >= %s"))
            params.append(query.since)
        if query.until is not None:
            clauses.append(sql.SQL("started_at < %s"))
            params.append(query.until)
        where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
        statement = sql.SQL(
            "SELECT record FROM {} {} ORDER BY started_at DESC, run_id DESC LIMIT %s"
        ).format(self._t, where)

        async def op(conn: AsyncConn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(statement, (*params, query.limit))).fetchall()

        rows = await self._pg.run("query runs", op)
        return [RunRecord.model_validate_json(row[0]) for row in rows]

    async def apply_retention(self, policy: RetentionPolicy, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            raise ValueError("now must carry a time zone")
        by_age = sql.SQL("DELETE FROM {} WHERE started_at < %s").format(self._t)
        by_count = sql.SQL(
            "DELETE FROM {t} WHERE run_id IN (SELECT run_id FROM (SELECT run_id, ROW_NUMBER() "
            "OVER (PARTITION BY agent ORDER BY started_at DESC, run_id DESC) AS position "
            "FROM {t}) AS ranked WHERE position > %s)"
        ).format(t=self._t)

        async def op(conn: AsyncConn) -> int:
            deleted = 0
            async with conn.transaction():
                if policy.max_age is not None:
                    cur = await conn.execute(by_age, (now - policy.max_age,))
                    deleted += max(cur.rowcount, 0)
                if policy.max_runs_per_agent is not None:
                    cur = await conn.execute(by_count, (policy.max_runs_per_agent,))
                    deleted += max(cur.rowcount, 0)
            return deleted

        return await self._pg.run("apply retention", op)

    async def close(self) -> None:
        await self._pg.close()

    async def _create(self, conn: AsyncConn) -> None:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"keel:{self.schema}",)
            )
            await conn.execute(
                sql.SQL(_DDL).format(schema=sql.Identifier(self.schema), table=self._t)
            )
            await stamp_version(
                conn, self.schema, "episodic_runs", SCHEMA_VERSION, "episodic store"
            )
