"""Spend alerts: a spike over the baseline calls back once (debounced), by log and by webhook."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from keel.budget import (
    Budget,
    BudgetedModel,
    BudgetMeter,
    BudgetScope,
    Limits,
    SpendAlert,
    SpendAlerts,
    SqliteBudgetLedger,
    WebhookAlert,
    log_alert,
)
from keel.budget.base import Spend
from keel.llm.messages import UserMessage
from keel.llm.testing import ScriptedModel

ACME = [BudgetScope.tenant("acme"), BudgetScope.run("r1")]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_spike_over_the_rolling_baseline_alerts_once_then_debounces() -> None:
    clock = Clock()
    seen: list[SpendAlert] = []
    alerts = SpendAlerts(
        [seen.append],
        metric="total_tokens",
        factor=3,
        window=60,
        baseline_window=600,
        debounce=300,
        clock=clock,
    )
    for _ in range(40):  # ten minutes of steady spend: 100 tokens every 15 s = 400/min
        alerts.record(ACME, Spend(total_tokens=100))
        clock.now += 15
    assert seen == []
    for _ in range(20):  # a runaway: 1000 tokens every 3 s
        alerts.record(ACME, Spend(total_tokens=1000))
        clock.now += 3
    assert len(seen) == 1  # debounced
    alert = seen[0]
    assert alert.subject == "tenant:acme"  # runs are not watched by default
    assert alert.rate_per_minute > 3 * alert.baseline_per_minute
    assert alert.baseline_per_minute == pytest.approx(400, rel=0.2)
    clock.now += 301
    alerts.record(ACME, Spend(total_tokens=50_000))
    assert len(seen) == 2  # after the debounce it may alert again


def test_a_configured_baseline_and_min_rate() -> None:
    clock = Clock()
    seen: list[SpendAlert] = []
    alerts = SpendAlerts([seen.append], baseline=0.01, factor=2, min_rate=0.05, clock=clock)
    alerts.record(ACME, Spend(cost_usd=0.001))  # 0.001/min: over 2 x 0.01? no
    assert seen == []
    alerts.record(ACME, Spend(cost_usd=0.04))  # 0.041/min > 0.02 but under min_rate 0.05
    assert seen == []
    alerts.record(ACME, Spend(cost_usd=0.02))
    assert [a.subject for a in seen] == ["tenant:acme"]


def test_log_alert_writes_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    alerts = SpendAlerts([log_alert], baseline=1, factor=1, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="keel.budget"):
        alerts.record(ACME, Spend(cost_usd=5))
    assert "spend alert: tenant:acme spends 5 cost_usd/min" in caplog.text


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(
            {"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)}
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/SECRET-TOKEN"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_webhook_gets_the_alert_as_json_from_a_budgeted_model(
    hook_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    webhook = WebhookAlert(hook_url)
    assert "SECRET" not in repr(webhook)
    alerts = SpendAlerts([webhook], metric="model_calls", baseline=0.5, factor=2)
    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    budgets = [Budget(scope=BudgetScope.tenant("acme"), limits=Limits(model_calls=100))]
    model = BudgetedModel(ScriptedModel(["a", "b", "c"]))
    with caplog.at_level(logging.DEBUG):
        async with BudgetMeter(ledger, budgets, alerts=alerts):
            for _ in range(3):
                await model.request([UserMessage(content="my secret prompt")])
        await alerts.drain()
    assert len(_Hook.received) == 1  # three calls in a moment: one alert, then debounced
    [got] = _Hook.received
    assert got["path"] == "/hooks/SECRET-TOKEN" and got["type"] == "application/json"
    payload = got["json"]
    assert payload["type"] == "keel.budget.spend_alert"
    assert payload["subject"] == "tenant:acme"
    assert payload["metric"] == "model_calls" and payload["factor"] == 2
    assert "secret prompt" not in json.dumps(payload)
    assert "SECRET-TOKEN" not in caplog.text


async def test_an_unreachable_webhook_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    webhook = WebhookAlert("http://127.0.0.1:9/hook?token=SECRET", timeout=1)
    alerts = SpendAlerts([webhook], baseline=1, factor=1, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="keel.budget"):
        alerts.record(ACME, Spend(cost_usd=5))
        await alerts.drain()
    assert "spend alert webhook failed" in caplog.text and "SECRET" not in caplog.text
