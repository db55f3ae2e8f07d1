"""Spend alerts: tell someone when a tenant or agent starts spending much faster than usual.

``SpendAlerts`` keeps, in this process, a rolling history of what each watched subject
(``tenant:acme``, ``agent:support``) spent. When the rate over the short ``window`` exceeds
``factor`` times the baseline (the rate over the longer ``baseline_window``, or a configured
``baseline`` per minute), it calls every callback with a ``SpendAlert``, then stays quiet for that
subject for ``debounce`` seconds. Built-ins: ``log_alert`` (a warning) and ``WebhookAlert`` (an
HTTP POST of the alert as JSON). The alert holds names and figures only: no prompts, no keys.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from keel.budget.base import COUNTERS, BudgetScope, Spend

__all__ = ["AlertCallback", "SpendAlert", "SpendAlerts", "WebhookAlert", "log_alert"]

log = logging.getLogger("keel.budget")

Metric = Literal[
    "input_tokens", "output_tokens", "total_tokens", "cost_usd", "model_calls", "tool_calls"
]


class SpendAlert(BaseModel):
    """One alert: who spends how fast, against what baseline (per minute)."""

    model_config = ConfigDict(frozen=True)

    subject: str
    metric: str
    rate_per_minute: float
    baseline_per_minute: float
    factor: float
    window_s: float
    at: float

    def describe(self) -> str:
        return (
            f"spend alert: {self.subject} spends {self.rate_per_minute:g} {self.metric}/min over "
            f"the last {self.window_s:g} s, more than {self.factor:g} x its baseline of "
            f"{self.baseline_per_minute:g}/min"
        )


AlertCallback = Callable[[SpendAlert], "Awaitable[None] | None"]


def log_alert(alert: SpendAlert) -> None:
    """Log the alert as a warning on the ``keel.budget`` logger."""
    log.warning("%s", alert.describe())


class WebhookAlert:
    """POSTs the alert as JSON to ``url`` (its address may hold a token: it is never logged)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("a webhook URL must start with http:// or https://")
        self.url = url
        self.timeout = timeout

    def __repr__(self) -> str:
        return "WebhookAlert(url=***)"

    async def __call__(self, alert: SpendAlert) -> None:
        body = json.dumps({"type": "keel.budget.spend_alert", **alert.model_dump()}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": "keel-budget"},
            method="POST",
        )
        try:
            await asyncio.to_thread(self._send, request)
        except Exception as e:  # an alert that cannot be delivered must not stop the work
            log.warning("spend alert webhook failed (%s)", type(e).__name__)

    def _send(self, request: urllib.request.Request) -> None:
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()


class SpendAlerts:
    """Watches the spend rate of ``kinds`` of scope and calls ``callbacks`` on a spike.

    With ``baseline`` (per minute) the rate is compared with that; without it, with the average
    rate over ``baseline_window`` seconds, once at least ``warmup`` seconds of history exist.
    ``min_rate`` (per minute) ignores spikes too small to matter.
    """

    def __init__(
        self,
        callbacks: Iterable[AlertCallback] = (log_alert,),
        *,
        metric: Metric = "cost_usd",
        factor: float = 3.0,
        window: float = 60.0,
        baseline_window: float = 3600.0,
        baseline: float | None = None,
        warmup: float | None = None,
        min_rate: float = 0.0,
        debounce: float = 600.0,
        kinds: Collection[str] = ("tenant", "agent"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if factor <= 0 or window <= 0 or baseline_window <= window:
            raise ValueError("need factor > 0, window > 0 and baseline_window > window")
        if metric not in COUNTERS:
            raise ValueError(f"unknown metric {metric!r}")
        self.callbacks = list(callbacks)
        self.metric = metric
        self.factor = factor
        self.window = window
        self.baseline_window = baseline_window
        self.baseline = baseline
        self.warmup = window * 2 if warmup is None else warmup
        self.min_rate = min_rate
        self.debounce = debounce
        self.kinds = frozenset(kinds)
        self.clock = clock
        self.sent: list[SpendAlert] = []
        self._history: dict[str, deque[tuple[float, float]]] = {}
        self._first: dict[str, float] = {}
        self._last_alert: dict[str, float] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, scopes: Iterable[BudgetScope], spend: Spend) -> None:
        """Add ``spend`` to each watched subject among ``scopes``; alert on a spike."""
        amount = float(getattr(spend, self.metric))
        now = self.clock()
        for subject in dict.fromkeys(s.subject for s in scopes if s.kind in self.kinds):
            history = self._history.setdefault(subject, deque())
            self._first.setdefault(subject, now)
            if amount:
                history.append((now, amount))
            while history and history[0][0] < now - self.baseline_window:
                history.popleft()
            alert = self._check(subject, history, now)
            if alert is not None:
                self._fire(alert)

    def _check(
        self, subject: str, history: deque[tuple[float, float]], now: float
    ) -> SpendAlert | None:
        last = self._last_alert.get(subject)
        if last is not None and now - last < self.debounce:
            return None
        recent = sum(a for t, a in history if t >= now - self.window)
        rate = recent / self.window * 60
        if self.baseline is not None:
            base = self.baseline
        else:
            age = now - self._first[subject]
            if age < self.warmup:
                return None
            # The baseline is the rate before the current window, so a spike does not raise it.
            span = min(age, self.baseline_window) - self.window
            older = sum(a for t, a in history if t < now - self.window)
            base = older / span * 60 if span > 0 else 0.0
        if rate <= self.min_rate or rate <= self.factor * base:
            return None
        self._last_alert[subject] = now
        return SpendAlert(
            subject=subject,
            metric=self.metric,
            rate_per_minute=rate,
            baseline_per_minute=base,
            factor=self.factor,
            window_s=self.window,
            at=now,
        )

    def _fire(self, alert: SpendAlert) -> None:
        self.sent.append(alert)
        for callback in self.callbacks:
            try:
                result = callback(alert)
            except Exception as e:
                log.warning("spend alert callback failed (%s)", type(e).__name__)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for alerts still being delivered (webhooks run in the background)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
