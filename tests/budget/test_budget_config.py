"""The ``[budget]`` settings: the ledger backend and the default limits per run, tenant and day."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.budget import BudgetScope, Limits, default_budgets, meter_from_settings, open_ledger
from keel.budget.base import Spend
from keel.budget.sqlite import SqliteBudgetLedger
from keel.config import load_settings
from keel.errors import ConfigError


def test_default_limits_become_budgets_for_run_tenant_and_day(tmp_path: Path) -> None:
    toml = tmp_path / "keel.toml"
    toml.write_text(
        "[budget.run]\ntotal_tokens = 4000\nmodel_calls = 20\n"
        "[budget.tenant_day]\ncost_usd = 5.0\n"
        "[budget.day]\ntool_calls = 1000\n"
    )
    settings = load_settings({"data_dir": tmp_path}, config_file=toml, environ={})
    budgets = default_budgets(settings, run_id="r9", tenant="acme")
    assert [b.scope for b in budgets] == [
        BudgetScope.run("r9"),
        BudgetScope.day(),
        BudgetScope.tenant("acme"),
    ]
    assert budgets[0].limits == Limits(total_tokens=4000, model_calls=20)
    assert budgets[2].limits == Limits(cost_usd=5.0)
    assert [b.scope.kind for b in default_budgets(settings)] == ["global"]
    meter = meter_from_settings(settings, run_id="r9")
    assert meter is not None and isinstance(meter.ledger, SqliteBudgetLedger)
    assert meter.ledger.path == tmp_path / "budget.db"


def test_no_limits_means_no_meter_and_a_server_ledger_needs_a_url(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path}, environ={})
    assert meter_from_settings(settings, run_id="r") is None
    remote = load_settings(environ={"KEEL_BUDGET__LEDGER": "redis"})
    with pytest.raises(ConfigError, match=r"needs budget\.url"):
        open_ledger(remote)
    with pytest.raises(ConfigError, match=r"budget\.ledger"):
        load_settings(environ={"KEEL_BUDGET__LEDGER": "mongo"})


async def test_a_postgres_and_a_redis_ledger_from_settings(
    budget_dsn: str, redis_port: int
) -> None:
    pg = open_ledger(
        load_settings({"budget": {"ledger": "postgres", "url": budget_dsn}}, environ={})
    )
    rd = open_ledger(
        load_settings(
            {"budget": {"ledger": "redis", "url": f"redis://127.0.0.1:{redis_port}/0"}}, environ={}
        )
    )
    for ledger in (pg, rd):
        [fresh] = await ledger.spend(["run:none"])
        assert fresh.used == Spend() and fresh.limits is None
        await ledger.aclose()
