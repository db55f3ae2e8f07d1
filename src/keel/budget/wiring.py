"""Budgets from ``KeelSettings``: the configured ledger and the default limits of ``[budget]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.budget.base import Budget, BudgetLedger, BudgetScope, Limits
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.budget.alerts import SpendAlerts
    from keel.budget.meter import BudgetMeter
    from keel.config import BudgetLimitSettings, KeelSettings

__all__ = ["default_budgets", "meter_from_settings", "open_ledger"]


def open_ledger(settings: KeelSettings) -> BudgetLedger:
    """The ledger ``[budget]`` names: SQLite under ``data_dir`` by default."""
    config = settings.budget
    if config.ledger == "sqlite":
        from keel.budget.sqlite import SqliteBudgetLedger

        return SqliteBudgetLedger(settings.budget_path)
    if not config.url:
        raise ConfigError(
            f"budget.ledger = {config.ledger!r} needs budget.url",
            hint="set KEEL_BUDGET__URL or [budget] url in keel.toml",
        )
    if config.ledger == "postgres":
        from keel.budget.postgres import PostgresBudgetLedger

        return PostgresBudgetLedger(config.url)
    import redis.asyncio

    from keel.budget.redis import RedisBudgetLedger

    return RedisBudgetLedger(redis.asyncio.Redis.from_url(config.url), close_client=True)


def _limits(section: BudgetLimitSettings) -> Limits | None:
    limits = Limits.model_validate(section.model_dump())
    return limits if limits.items() else None


def default_budgets(
    settings: KeelSettings, *, run_id: str | None = None, tenant: str | None = None
) -> list[Budget]:
    """The budgets ``[budget]`` sets for a run (``run``), a tenant (``tenant_day``) and the day."""
    config = settings.budget
    wanted: list[tuple[BudgetScope, BudgetLimitSettings]] = [(BudgetScope.day(), config.day)]
    if run_id is not None:
        wanted.insert(0, (BudgetScope.run(run_id), config.run))
    if tenant is not None:
        wanted.append((BudgetScope.tenant(tenant), config.tenant_day))
    out: list[Budget] = []
    for scope, section in wanted:
        limits = _limits(section)
        if limits is not None:
            out.append(Budget(scope=scope, limits=limits))
    return out


def meter_from_settings(
    settings: KeelSettings,
    *,
    run_id: str | None = None,
    tenant: str | None = None,
    ledger: BudgetLedger | None = None,
    extra: list[Budget] | None = None,
    alerts: SpendAlerts | None = None,
) -> BudgetMeter | None:
    """A meter over the configured budgets (plus ``extra``), or None when none is configured."""
    from keel.budget.meter import BudgetMeter
    from keel.llm.cost import PriceTable

    budgets = default_budgets(settings, run_id=run_id, tenant=tenant) + list(extra or [])
    if not budgets:
        return None
    prices = PriceTable.from_toml(settings.budget.prices) if settings.budget.prices else None
    return BudgetMeter(
        ledger or open_ledger(settings),
        budgets,
        prices=prices,
        ttl=settings.budget.reservation_ttl_s,
        alerts=alerts,
    )
