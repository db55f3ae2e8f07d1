"""The PostgreSQL trace store against a real PostgreSQL server started for the test session:
the conformance suite, its schema, its errors, two processes sharing it, and ``keel trace`` and
``keel ui`` reading it when ``trace.dsn`` is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.request import urlopen

import psycopg
import pytest
from conftest import record_demo_runs
from trace_store_conformance import TraceStoreConformance, agent_trace, sid, span, tid
from typer.testing import CliRunner

from keel.cli import app
from keel.config import TraceSettings
from keel.errors import ConfigError, StoreError
from keel.observe import PostgresTraceStore, TraceStore, setup_tracing, shutdown_tracing
from keel.observe.postgres import SCHEMA_VERSION
from keel.observe.tracing import setup_from_settings
from keel.observe.ui import TraceViewer
from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401 - session fixture


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:  # noqa: F811 - the imported fixture
    return postgres_server.create_database("keel_traces")


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


class TestPostgresTraceStore(TraceStoreConformance):
    @pytest.fixture
    def store(self, pg_dsn: str, schema: str) -> Iterator[TraceStore]:
        with PostgresTraceStore(pg_dsn, schema=schema) as s:
            yield s

    @pytest.fixture
    def reopen(self, pg_dsn: str, schema: str) -> Callable[[], TraceStore]:
        return lambda: PostgresTraceStore(pg_dsn, schema=schema)


def test_the_table_is_versioned_and_a_newer_version_is_refused(pg_dsn: str, schema: str) -> None:
    with PostgresTraceStore(pg_dsn, schema=schema) as store:
        store.write(agent_trace())
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT component, version FROM {schema}.keel_schema_versions")
        assert rows.fetchall() == [("trace_spans", SCHEMA_VERSION)]
        assert conn.execute(f"SELECT COUNT(*) FROM {schema}.trace_spans").fetchone() == (6,)
        conn.execute(f"UPDATE {schema}.keel_schema_versions SET version = 99")
    with (
        PostgresTraceStore(pg_dsn, schema=schema) as again,
        pytest.raises(StoreError, match="version 99, newer"),
    ):
        again.trace_ids()


def test_errors_name_the_server_but_never_the_password(postgres_server: PostgresServer) -> None:  # noqa: F811
    wrong = "Wr0ng-Pa55word-xyz"
    dsn = postgres_server.conninfo("keel_traces", password=False) + f" password={wrong}"
    store = PostgresTraceStore(dsn)
    assert wrong not in repr(store) and wrong not in store.location
    with pytest.raises(StoreError) as failed:
        store.write(agent_trace())
    message = str(failed.value)
    assert "cannot connect to the PostgreSQL trace store" in message
    assert f"{postgres_server.host}:{postgres_server.port}/keel_traces" in message
    assert wrong not in message
    with pytest.raises(StoreError, match="invalid PostgreSQL connection string") as bad:
        PostgresTraceStore(f"host=x password={wrong} = =")
    assert wrong not in str(bad.value)
    with pytest.raises(ValueError, match="schema"):
        PostgresTraceStore(dsn, schema="Bad-Name")


def test_a_password_in_trace_dsn_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="must not hold a password"):
        TraceSettings(dsn="postgresql://keel:secret@db/keel")


_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from keel.config import TraceSettings
    from keel.observe import get_tracer, shutdown_tracing
    from keel.observe.tracing import setup_from_settings

    name, schema = sys.argv[1], sys.argv[2]
    settings = TraceSettings(dsn_env="KEEL_TEST_TRACE_DSN", pg_schema=schema)
    store = setup_from_settings(settings, Path("unused.db"))
    with get_tracer("test").start_as_current_span(f"invoke_agent {name}") as s:
        mine = format(s.get_span_context().trace_id, "032x")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the other process's trace shows up
        names = [t.root_name for t in store.traces(10)]
        if len(names) >= 2:
            break
        time.sleep(0.1)
    print(json.dumps({"mine": mine, "seen": names, "where": type(store).__name__}))
    shutdown_tracing()
    """
)


def test_two_processes_writing_one_store_see_each_others_traces(
    pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    env = {**os.environ, "KEEL_TEST_TRACE_DSN": pg_dsn}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, name, schema],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("alpha", "beta")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    for result in results:
        assert result["where"] == "PostgresTraceStore"
        assert sorted(result["seen"]) == ["invoke_agent alpha", "invoke_agent beta"]
    assert not (tmp_path / "unused.db").exists()  # nothing went to a local file
    with PostgresTraceStore(pg_dsn, schema=schema) as store:
        assert set(store.trace_ids()) == {r["mine"] for r in results}


def test_setup_from_settings_reuses_the_open_postgres_store(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_TEST_TRACE_DSN_2", pg_dsn)
    settings = TraceSettings(dsn_env="KEEL_TEST_TRACE_DSN_2", pg_schema=schema)
    try:
        first = setup_from_settings(settings, Path("unused.db"))
        assert isinstance(first, PostgresTraceStore)
        assert setup_from_settings(settings, Path("unused.db")) is first
        other = TraceSettings(dsn_env="KEEL_TEST_TRACE_DSN_2", pg_schema=schema + "_b")
        second = setup_from_settings(other, Path("unused.db"))
        assert second is not first and not first.closed  # the old one stays open for reading
        first.close()
    finally:
        shutdown_tracing()
    assert second is not None and second.closed
    monkeypatch.delenv("KEEL_TEST_TRACE_DSN_2")
    with pytest.raises(ConfigError, match="KEEL_TEST_TRACE_DSN_2, which is not set"):
        setup_from_settings(settings, Path("unused.db"))


def test_keel_trace_and_keel_ui_read_the_postgres_store(
    postgres_server: PostgresServer,  # noqa: F811
    pg_dsn: str,
    schema: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = setup_tracing(PostgresTraceStore(pg_dsn, schema=schema))
    try:
        runs = record_demo_runs(store)  # type: ignore[arg-type]
    finally:
        shutdown_tracing()
    env = {
        "COLUMNS": "200",
        "KEEL_TRACE__DSN": postgres_server.conninfo("keel_traces", password=False),
        "PGPASSWORD": postgres_server.password,
        "KEEL_TRACE__PG_SCHEMA": schema,
    }

    def keel(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path)], env=env)
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = keel("trace", "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        runs.failed_trace[:12],
        runs.ok_trace[:12],
    ]
    code, out, _ = keel("trace", "list", "--session", runs.session)
    assert [line.split()[0] for line in out.splitlines()] == [runs.ok_trace[:12]]
    code, out, _ = keel("trace", "show", runs.ok_trace[:8])
    assert code == 0 and "execute_tool lookup" in out and "weather-agent" in out
    code, out, err = keel("trace", "show", "123456")
    assert code == 1 and "no trace '123456'" in err and postgres_server.password not in err
    assert not (tmp_path / "traces.db").exists()

    from keel.observe.cli import _store

    for key, value in env.items():  # the store connects on first use: keep the password there
        monkeypatch.setenv(key, value)
    viewer = TraceViewer(_store(None, tmp_path), port=0)
    url = viewer.start()
    try:
        with urlopen(url) as response:
            page = response.read().decode()
        assert runs.ok_trace[:12] in page and runs.failed_trace[:12] in page
        assert postgres_server.password not in page
        with urlopen(f"{url}trace/{runs.failed_trace}") as response:
            assert "model crashed" in response.read().decode()
    finally:
        viewer.close()
    assert viewer.store.closed


def test_spans_are_written_with_their_exact_ids(pg_dsn: str, schema: str) -> None:
    """Direct SQL sees what the store wrote: lowercase ids, JSON attributes, one row per span."""
    with PostgresTraceStore(pg_dsn, schema=schema) as store:
        store.write([span(tid(1).upper(), sid(1).upper(), None, "chat tiny", 0, 1)])
        store.write([span(tid(1), sid(1), None, "chat tiny", 0, 2)])
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT trace_id, span_id, attributes FROM {schema}.trace_spans")
        ((trace_id, span_id, attributes),) = rows.fetchall()
    assert (trace_id, span_id) == (tid(1), sid(1))
    assert json.loads(attributes) == {"gen_ai.operation.name": "chat"}
