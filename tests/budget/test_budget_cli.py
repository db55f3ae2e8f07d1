"""``keel budget status``: today's spend per scope against its limits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from keel.budget import Budget, BudgetScope, Limits, SqliteBudgetLedger, utc_day
from keel.budget.base import Spend
from keel.budget.cli import app

runner = CliRunner()


async def spend(data_dir: Path) -> None:
    ledger = SqliteBudgetLedger(data_dir / "budget.db")
    for tenant, tokens in (("acme", 300), ("globex", 50)):
        budgets = [
            Budget(scope=BudgetScope.tenant(tenant), limits=Limits(total_tokens=1000)),
            Budget(scope=BudgetScope.day(), limits=Limits(cost_usd=2.5)),
            Budget(scope=BudgetScope.run(f"run-{tenant}"), limits=Limits(model_calls=9)),
        ]
        held = await ledger.reserve(budgets, Spend(total_tokens=400, model_calls=1))
        await ledger.settle(held, Spend(total_tokens=tokens, cost_usd=0.25, model_calls=1))
    await ledger.aclose()


def test_status_shows_todays_scopes_against_their_limits(tmp_path: Path) -> None:
    asyncio.run(spend(tmp_path))
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["day"] == utc_day()
    scopes = {row["scope"]: row for row in report["scopes"]}
    day = utc_day()
    assert set(scopes) == {f"global@{day}", f"tenant:acme@{day}", f"tenant:globex@{day}"}
    assert scopes[f"tenant:acme@{day}"]["used"]["total_tokens"] == 300
    assert scopes[f"tenant:acme@{day}"]["limits"] == {"total_tokens": 1000}
    assert scopes[f"global@{day}"]["used"]["cost_usd"] == 0.5

    table = runner.invoke(
        app, ["status", "--data-dir", str(tmp_path), "--tenant", "acme"], env={"COLUMNS": "200"}
    )
    assert table.exit_code == 0, table.output
    assert f"tenant:acme@{day}" in table.output and "globex" not in table.output
    assert "700" in table.output  # tokens left for acme today


def test_status_of_an_empty_ledger_and_a_bad_day(tmp_path: Path) -> None:
    empty = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert empty.exit_code == 0 and "no budget spend recorded" in empty.output
    bad = runner.invoke(app, ["status", "--data-dir", str(tmp_path), "--day", "yesterday"])
    assert bad.exit_code == 1
    assert "--day must be a date" in bad.output and "Traceback" not in bad.output
