"""OpenTelemetry metrics derived from spans, read in-process with an InMemoryMetricReader."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import record_demo_runs
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from pydantic import BaseModel

from keel.errors import ModelUnavailableError
from keel.graph import END, START, Graph
from keel.graph.builder import RetryPolicy
from keel.llm import InstrumentedModel, RetryModel
from keel.llm.testing import ScriptedModel
from keel.observe import SQLiteTraceStore, setup_tracing, shutdown_tracing
from keel.observe.stats import compute_stats


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[tuple[SQLiteTraceStore, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    store = setup_tracing(tmp_path / "traces.db", metric_readers=[reader])
    yield store, reader
    shutdown_tracing()


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def test_token_usage_duration_cost_tool_latency_and_errors(
    metered: tuple[SQLiteTraceStore, InMemoryMetricReader],
) -> None:
    store, reader = metered
    record_demo_runs(store)
    points = _points(reader)

    tokens = {p.attributes["gen_ai.token.type"]: p for p in points["gen_ai.client.token.usage"]}
    assert isinstance(tokens["input"], HistogramDataPoint)
    assert (tokens["input"].count, tokens["input"].sum) == (3, 30)  # 3 answered calls x 10
    assert (tokens["output"].count, tokens["output"].sum) == (3, 15)
    assert tokens["input"].attributes["gen_ai.request.model"] == "weather-model"
    assert tokens["input"].attributes["gen_ai.provider.name"] == "scripted"

    durations = points["gen_ai.client.operation.duration"]
    chat_ok = [
        p
        for p in durations
        if p.attributes["gen_ai.operation.name"] == "chat" and "error.type" not in p.attributes
    ]
    chat_failed = [p for p in durations if p.attributes.get("error.type") == "RuntimeError"]
    assert sum(p.count for p in chat_ok) == 3
    assert sum(p.count for p in chat_failed) == 2  # the failed chat span and the agent run
    (cost,) = points["keel.cost"]
    assert cost.value == pytest.approx(3 * 5e-5)

    tools = {p.attributes["gen_ai.tool.name"]: p for p in points["keel.tool.duration"]}
    assert tools["lookup"].count == 1 and "error.type" not in tools["lookup"].attributes
    assert tools["divide"].attributes["error.type"] == "tool_error"

    errors = {
        (p.attributes["gen_ai.operation.name"], p.attributes["error.type"]): p.value
        for p in points["keel.errors"]
    }
    assert errors == {
        ("execute_tool", "tool_error"): 1,
        ("chat", "RuntimeError"): 1,
        ("invoke_agent", "RuntimeError"): 1,
    }

    # The store gives the same figures back (keel trace stats).
    stats = compute_stats(store.spans())
    assert (stats.input_tokens, stats.output_tokens) == (30, 15)
    assert stats.cost_usd == pytest.approx(cost.value)
    assert stats.by_operation["chat"].count == 4 and stats.by_operation["chat"].errors == 1
    assert stats.by_tool["divide"].errors == 1
    assert stats.failed_traces == 1


class Counter(BaseModel):
    attempts: int = 0


def test_retries_of_model_calls_and_graph_nodes_are_counted(
    metered: tuple[SQLiteTraceStore, InMemoryMetricReader],
) -> None:
    store, reader = metered

    async def no_sleep(_: float) -> None:
        return None

    model = InstrumentedModel(
        RetryModel(
            ScriptedModel([ModelUnavailableError("busy"), ModelUnavailableError("busy"), "ok"]),
            sleep=no_sleep,
        )
    )
    failures = iter([ValueError("flaky")])

    def flaky(state: Counter) -> dict[str, int]:
        for error in failures:
            raise error
        return {"attempts": state.attempts + 1}

    graph = Graph(Counter, name="flaky")
    graph.add_node("flaky", flaky, retry=RetryPolicy(max_attempts=3))
    graph.add_edge(START, "flaky").add_edge("flaky", END)

    async def go() -> None:
        await model.request([])
        await graph.compile().run({})

    asyncio.run(go())
    retries = {
        p.attributes["gen_ai.operation.name"]: p.value for p in _points(reader)["keel.retries"]
    }
    assert retries == {"chat": 2, "other": 1}
    assert compute_stats(store.spans()).retries == 3
