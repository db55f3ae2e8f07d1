"""Hard budgets on tokens, cost, model calls, tool calls and wall time, per run, session,
tenant and day: the worst case of each call is reserved before it (so a runaway loop stops
before it overshoots), the actual is settled after, and the counters persist in SQLite,
PostgreSQL or Redis. Spend alerts call back when a tenant's or agent's spend rate spikes.

Names are imported lazily, so ``import keel.budget`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.budget.alerts import (
        AlertCallback,
        SpendAlert,
        SpendAlerts,
        WebhookAlert,
        log_alert,
    )
    from keel.budget.base import (
        COUNTERS,
        Budget,
        BudgetLedger,
        BudgetScope,
        Limits,
        Reservation,
        ScopeSpend,
        Spend,
        utc_day,
    )
    from keel.budget.meter import BudgetedModel, BudgetMeter, current_meter
    from keel.budget.sqlite import SqliteBudgetLedger
    from keel.budget.wiring import default_budgets, meter_from_settings, open_ledger
    from keel.errors import BudgetExceeded

_WHERE = {
    "AlertCallback": "keel.budget.alerts",
    "SpendAlert": "keel.budget.alerts",
    "SpendAlerts": "keel.budget.alerts",
    "WebhookAlert": "keel.budget.alerts",
    "log_alert": "keel.budget.alerts",
    "COUNTERS": "keel.budget.base",
    "Budget": "keel.budget.base",
    "BudgetLedger": "keel.budget.base",
    "BudgetScope": "keel.budget.base",
    "Limits": "keel.budget.base",
    "Reservation": "keel.budget.base",
    "ScopeSpend": "keel.budget.base",
    "Spend": "keel.budget.base",
    "utc_day": "keel.budget.base",
    "BudgetMeter": "keel.budget.meter",
    "BudgetedModel": "keel.budget.meter",
    "current_meter": "keel.budget.meter",
    "SqliteBudgetLedger": "keel.budget.sqlite",
    "default_budgets": "keel.budget.wiring",
    "meter_from_settings": "keel.budget.wiring",
    "open_ledger": "keel.budget.wiring",
    "BudgetExceeded": "keel.errors",
}

__all__ = [
    "AlertCallback",
    "Budget",
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetMeter",
    "BudgetScope",
    "BudgetedModel",
    "COUNTERS",
    "Limits",
    "Reservation",
    "ScopeSpend",
    "Spend",
    "SpendAlert",
    "SpendAlerts",
    "SqliteBudgetLedger",
    "WebhookAlert",
    "current_meter",
    "default_budgets",
    "log_alert",
    "meter_from_settings",
    "open_ledger",
    "utc_day",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
