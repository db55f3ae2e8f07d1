"""``keel serve keys``: create (the secret is printed once), list (never secrets), revoke."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from keel.cli import app
from keel.serve.sqlite import SqliteKeyStore

runner = CliRunner()


def test_create_list_and_revoke_keys(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(
        app, ["serve", "keys", "create", "--tenant", "acme", "--name", "ci", *data]
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("keel_")
    store = SqliteKeyStore(tmp_path / "keys.db")
    key = asyncio.run(store.verify(secret))
    assert key is not None and key.tenant == "acme" and key.name == "ci"

    listed = runner.invoke(app, ["serve", "keys", "list", *data])
    assert listed.exit_code == 0 and key.id in listed.stdout and "acme" in listed.stdout
    assert secret not in listed.output and secret.split("_")[-1] not in listed.output

    revoked = runner.invoke(app, ["serve", "keys", "revoke", key.id, *data])
    assert revoked.exit_code == 0 and asyncio.run(store.verify(secret)) is None
    assert "revoked" in runner.invoke(app, ["serve", "keys", "list", *data]).stdout


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    bad = runner.invoke(app, ["serve", "keys", "create", "--tenant", "Not Valid", *data])
    assert bad.exit_code == 1 and "invalid tenant name" in bad.output
    assert "Traceback" not in bad.output
    missing = runner.invoke(app, ["serve", "keys", "revoke", "nope", *data])
    assert missing.exit_code == 1 and "no key with id 'nope'" in missing.output
