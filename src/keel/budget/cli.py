"""``keel budget``: what today's budgets have spent, per scope, against their limits.

Mounted by ``keel.cli`` as ``keel budget``. Expected failures go through
``keel.console.fail_cleanly``: one ``error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from keel.console import ConfigOption, DataDirOption, fail_cleanly

if TYPE_CHECKING:
    from keel.budget.base import ScopeSpend
    from keel.config import KeelSettings

__all__ = ["app"]

app = typer.Typer(help="Token, cost, call and wall-time budgets.", no_args_is_help=True)
out = Console()


@app.callback()
def budget() -> None:
    """Token, cost, call and wall-time budgets."""


def _settings(config: Path | None, data_dir: Path | None) -> KeelSettings:
    from keel.config import load_settings

    overrides: dict[str, Any] = {} if data_dir is None else {"data_dir": data_dir}
    return load_settings(overrides, config_file=config)


async def _status(settings: KeelSettings, tenant: str | None, day: str) -> list[ScopeSpend]:
    from keel.budget.base import BudgetScope, Limits
    from keel.budget.wiring import _limits, open_ledger

    ledger = open_ledger(settings)
    try:
        keys = [k for k in await ledger.scopes(day=day) if "@" in k]
        if tenant is not None:
            mine = BudgetScope.tenant(tenant).subject + "@"
            keys = [k for k in keys if k.startswith((mine, "global@"))]
        spends = await ledger.spend(keys)
    finally:
        await ledger.aclose()
    configured: dict[str, Limits | None] = {
        "global": _limits(settings.budget.day),
        "tenant": _limits(settings.budget.tenant_day),
    }
    filled = []
    for s in spends:
        if s.limits is None:
            kind = s.key.split(":", 1)[0].split("@", 1)[0]
            s = type(s)(s.key, s.used, s.reserved, configured.get(kind))
        filled.append(s)
    return filled


@app.command()
@fail_cleanly
def status(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant (and the global day).")
    ] = None,
    day: Annotated[
        str | None, typer.Option("--day", help="A UTC date, YYYY-MM-DD. Default: today.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Show today's spend per budget scope (UTC day) against its limits."""
    from datetime import date

    from keel.budget.base import COUNTERS, utc_day
    from keel.errors import ConfigError

    if day is not None:
        try:
            date.fromisoformat(day)
        except ValueError:
            raise ConfigError(f"--day must be a date like 2026-11-24, got {day!r}") from None
    when = day or utc_day()
    spends = asyncio.run(_status(_settings(config, data_dir), tenant, when))
    if as_json:
        rows = [
            {
                "scope": s.key,
                "used": s.used.nonzero(),
                "reserved": s.reserved.nonzero(),
                "limits": dict(s.limits.items()) if s.limits else {},
            }
            for s in spends
        ]
        out.print_json(json.dumps({"day": when, "scopes": rows}))
        return
    if not spends:
        out.print(f"no budget spend recorded for {when} (UTC)", highlight=False)
        return
    table = Table(title=f"budgets on {when} (UTC)")
    for column in ("scope", "counter", "used", "reserved", "limit", "left"):
        table.add_column(column, justify="left" if column in ("scope", "counter") else "right")
    for s in spends:
        bounds = dict(s.limits.items()) if s.limits else {}
        for counter in COUNTERS:
            used, held = getattr(s.used, counter), getattr(s.reserved, counter)
            bound = bounds.get(counter)
            if not used and not held and bound is None:
                continue
            left = "" if bound is None else f"{max(0.0, bound - used - held):g}"
            limit = "-" if bound is None else f"{bound:g}"
            table.add_row(s.key, counter, f"{used:g}", f"{held:g}", limit, left)
    out.print(table)
