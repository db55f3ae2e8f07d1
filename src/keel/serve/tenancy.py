"""What the service keeps apart per tenant besides its runs: budgets and cached answers.

Every run the service drives executes inside a ``BudgetMeter`` over the run, the tenant's UTC
day and (when limited) the whole day, on the configured ledger, so with ``[shared]`` several
processes count against the same budgets. The tenant of the run being driven is in
``current_tenant``; ``TenantCachedModel`` reads it so one tenant's cached answers are never
served to another.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keel.budget.base import Budget, BudgetLedger, BudgetScope, Limits, ScopeSpend
from keel.cache.model import CachedModel

if TYPE_CHECKING:
    from keel.budget.meter import BudgetMeter
    from keel.config import BudgetLimitSettings, KeelSettings
    from keel.llm.base import Model
    from keel.llm.cost import PriceTable

__all__ = ["TenantBudgets", "TenantCachedModel", "current_tenant", "tenant_cached"]

current_tenant: ContextVar[str | None] = ContextVar("keel_serve_tenant", default=None)
"""The tenant whose run the current task drives (set by the run manager)."""


def _limits(section: BudgetLimitSettings) -> Limits:
    return Limits.model_validate(section.model_dump())


@dataclass
class TenantBudgets:
    """The budgets of every served run: ``run`` per run, ``tenant_day`` (or the tenant's own
    entry in ``tenants``) per tenant and UTC day, ``day`` for everything per UTC day."""

    ledger: BudgetLedger
    run: Limits = field(default_factory=Limits)
    tenant_day: Limits = field(default_factory=Limits)
    day: Limits = field(default_factory=Limits)
    tenants: dict[str, Limits] = field(default_factory=dict)
    prices: PriceTable | None = None
    ttl: float = 300.0

    @classmethod
    def from_settings(
        cls, settings: KeelSettings, *, ledger: BudgetLedger | None = None
    ) -> TenantBudgets:
        """The ``[budget]`` limits over the configured ledger (``budget.ledger``)."""
        from keel.budget.wiring import open_ledger

        config = settings.budget
        prices = None
        if config.prices:
            from keel.llm.cost import PriceTable

            prices = PriceTable.from_toml(config.prices)
        return cls(
            ledger=ledger or open_ledger(settings),
            run=_limits(config.run),
            tenant_day=_limits(config.tenant_day),
            day=_limits(config.day),
            tenants={name: _limits(s) for name, s in config.tenants.items()},
            prices=prices,
            ttl=config.reservation_ttl_s,
        )

    def limits(self, tenant: str) -> Limits:
        """The daily limits of ``tenant``."""
        return self.tenants.get(tenant, self.tenant_day)

    def budgets(self, run_id: str, tenant: str) -> list[Budget]:
        """Run and tenant-day budgets always (so spend is counted even when unlimited); the
        all-tenants day budget only when it limits something."""
        out = [
            Budget(scope=BudgetScope.run(run_id), limits=self.run),
            Budget(scope=BudgetScope.tenant(tenant), limits=self.limits(tenant)),
        ]
        if self.day.items():
            out.append(Budget(scope=BudgetScope.day(), limits=self.day))
        return out

    def meter(self, run_id: str, tenant: str) -> BudgetMeter:
        from keel.budget.meter import BudgetMeter

        return BudgetMeter(
            self.ledger, self.budgets(run_id, tenant), prices=self.prices, ttl=self.ttl
        )

    async def today(self, tenant: str) -> tuple[str, ScopeSpend]:
        """Today's UTC date and the tenant's counters for it (that tenant's key only)."""
        key = BudgetScope.tenant(tenant).key()
        (spend,) = await self.ledger.spend([key])
        return key.rpartition("@")[2], spend

    async def aclose(self) -> None:
        await self.ledger.aclose()


class TenantCachedModel(CachedModel):
    """A ``CachedModel`` whose namespace is ``BASE:tenant:T`` for the tenant of the current run
    (``BASE`` outside a run), so tenants never share cached answers."""

    @property
    def namespace(self) -> str:
        tenant = current_tenant.get()
        return self._base if tenant is None else f"{self._base}:tenant:{tenant}"

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._base = value


def tenant_cached(
    model: Model, settings: KeelSettings, *, default_temperature: float | None = None
) -> Model:
    """``model`` behind the ``[cache]`` response cache, namespaced per tenant; unchanged when
    ``cache.enabled`` is off."""
    if not settings.cache.enabled:
        return model
    from keel.cache.factory import open_cache_backend

    embedder = None
    if settings.cache.semantic:
        from keel.memory.factory import create_embedder

        embedder = create_embedder(settings.embeddings)
    return TenantCachedModel(
        model,
        open_cache_backend(settings),
        namespace=settings.cache.namespace,
        embedder=embedder,
        threshold=settings.cache.threshold,
        ttl=settings.cache.ttl_s or None,
        cache_sampled=settings.cache.cache_sampled,
        default_temperature=default_temperature,
        owns_backend=True,
    )
