"""One ``[shared]`` section points every store of the stack at shared servers; settings written
out explicitly win, and a password in the shared dsn is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keel.config import load_settings
from keel.errors import ConfigError

DOCS = Path(__file__).parents[2] / "docs" / "scale.md"


def documented_config(tmp_path: Path) -> Path:
    section = DOCS.read_text().split("## Shared state", 1)[1]
    match = re.search(r"^```toml\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert match is not None
    path = tmp_path / "keel.toml"
    path.write_text(match.group(1))
    return path


def test_the_documented_file_switches_every_store(tmp_path: Path) -> None:
    settings = load_settings(config_file=documented_config(tmp_path), environ={})
    dsn = "host=db.internal port=5432 dbname=keel user=keel"
    assert settings.shared.resolve_dsn() == dsn
    assert (settings.memory.backend, settings.memory.dsn) == ("pgvector", dsn)
    assert settings.trace.resolve_dsn() == dsn
    assert (settings.budget.ledger, settings.budget.url) == ("redis", settings.shared.redis_url)
    assert (settings.cache.backend, settings.cache.redis_url) == (
        "redis",
        settings.shared.redis_url,
    )
    assert settings.cache.enabled and settings.serve.lease_s == 30


def test_without_redis_budgets_go_to_postgres_and_explicit_settings_win() -> None:
    settings = load_settings(
        {
            "shared": {"dsn_env": "PG_DSN", "pg_schema": "team"},
            "memory": {"backend": "qdrant"},
            "trace": {"dsn": "host=traces dbname=t"},
        },
        environ={"PG_DSN": "host=db dbname=k"},
    )
    assert settings.memory.backend == "qdrant"
    assert settings.trace.dsn == "host=traces dbname=t"
    assert settings.memory.pg_schema == settings.trace.pg_schema == "team"
    assert settings.cache.backend == "sqlite"
    assert settings.budget.ledger == "postgres"
    plain = load_settings(environ={})
    assert (plain.memory.backend, plain.budget.ledger, plain.cache.backend) == (
        "sqlite",
        "sqlite",
        "sqlite",
    )
    assert plain.trace.dsn is None and plain.shared.resolve_dsn() is None


def test_a_password_in_the_shared_dsn_is_refused_without_echoing_it() -> None:
    for dsn in ("host=db password=hunter2", "postgresql://u:hunter2@db/k"):
        with pytest.raises(ConfigError) as raised:
            load_settings({"shared": {"dsn": dsn}}, environ={})
        assert "hunter2" not in str(raised.value)
    settings = load_settings({"shared": {"dsn_env": "NOT_SET_HERE"}}, environ={})
    with pytest.raises(ConfigError, match="NOT_SET_HERE"):
        settings.shared.resolve_dsn()
