"""BudgetedModel and the tool gate: a runaway loop stops before it overshoots any budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import keel.budget.meter as meter_module
import keel.tools.registry as registry_module
from keel.budget import (
    COUNTERS,
    Budget,
    BudgetedModel,
    BudgetMeter,
    BudgetScope,
    Limits,
    SqliteBudgetLedger,
)
from keel.errors import BudgetExceeded, StoreError
from keel.graph import Agent, agent_graph
from keel.graph.agent import AgentResult
from keel.graph.loop import conversation
from keel.llm.cost import Price, PriceTable
from keel.llm.messages import AssistantMessage, Response, ToolCallPart, Usage, UserMessage
from keel.llm.testing import FunctionModel, ModelCall, ScriptedModel
from keel.llm.tokens import estimate_message_tokens
from keel.tools import ToolRegistry

PRICES = PriceTable({"runaway": Price(input=2.0, output=8.0)})


def runaway() -> FunctionModel:
    """A model that always asks for one more tool call and reports honest usage: its prompt as
    counted, and a reply shorter than the max_tokens it was given."""
    turn = 0

    def reply(call: ModelCall) -> Response:
        nonlocal turn
        turn += 1
        assert call.settings is not None and call.settings.max_tokens is not None
        tool_call = ToolCallPart(id=f"c{turn}", name="lookup", arguments={"n": turn})
        usage = Usage(
            input_tokens=estimate_message_tokens(call.messages),
            output_tokens=min(12, call.settings.max_tokens),
        )
        message = AssistantMessage(parts=(tool_call,))
        return Response(message=message, usage=usage, model_name="runaway")

    return FunctionModel(reply, name="runaway")


def tools() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool
    def lookup(n: int) -> str:
        """Look up item n."""
        return f"item {n} " + "x" * 40

    return registry


async def assert_within(ledger: SqliteBudgetLedger, budgets: list[Budget]) -> None:
    spends = await ledger.spend([b.scope.key() for b in budgets])
    for budget, spend in zip(budgets, spends, strict=True):
        assert spend.reserved.values() == (0.0,) * len(COUNTERS)
        for counter, bound in budget.limits.items():
            assert getattr(spend.used, counter) <= bound, (spend.key, counter)


@pytest.mark.parametrize(
    ("run_limits", "binding"),
    [
        ({"total_tokens": 1500}, "total_tokens"),
        ({"input_tokens": 900}, "input_tokens"),
        ({"cost_usd": 0.004}, "cost_usd"),
        ({"model_calls": 4}, "model_calls"),
        ({"tool_calls": 3}, "tool_calls"),
    ],
)
async def test_a_runaway_agent_graph_stops_before_overshooting(
    tmp_path: Path, run_limits: dict[str, float], binding: str
) -> None:
    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    budgets = [
        Budget(scope=BudgetScope.run("t1"), limits=Limits(**run_limits)),  # type: ignore[arg-type]
        Budget(scope=BudgetScope.tenant("acme"), limits=Limits(total_tokens=100_000)),
    ]
    model = runaway()
    graph = agent_graph(BudgetedModel(model, max_tokens=64), tools(), max_turns=1000).compile()
    with pytest.raises(BudgetExceeded) as caught:
        async with BudgetMeter(ledger, budgets, prices=PRICES):
            await graph.run({"messages": conversation("go")}, run_id="t1")
    e = caught.value
    assert e.scope == "run:t1" and e.limit == binding
    assert e.used + e.requested > e.maximum  # the refused call would have overshot
    assert e.run_id == "t1" and e.state is not None and e.steps
    await assert_within(ledger, budgets)
    [run, tenant] = await ledger.spend([b.scope.key() for b in budgets])
    assert run.used.model_calls == len(model.calls)  # the refused call never reached the model
    assert run.used.total_tokens == tenant.used.total_tokens > 0
    assert run.used.wall_time_s > 0


async def test_agent_run_stops_too_and_tenant_day_budget_binds_across_runs(
    tmp_path: Path,
) -> None:
    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    tenant = Budget(scope=BudgetScope.tenant("acme"), limits=Limits(model_calls=5))
    calls = 0
    for run_id in ("a", "b", "c"):
        run = Budget(scope=BudgetScope.run(run_id), limits=Limits(model_calls=2))
        model = runaway()
        agent = Agent(BudgetedModel(model, max_tokens=32), tools(), max_steps=50)
        with pytest.raises(BudgetExceeded) as caught:
            async with BudgetMeter(ledger, [run, tenant]):
                await agent.run("go")
        calls += len(model.calls)
        partial = caught.value.state
        assert isinstance(partial, AgentResult)  # what the run did before it was stopped
        assert partial.steps == len(model.calls) and partial.usage.output_tokens > 0
        assert len(partial.tool_results) == len(model.calls)
        if run_id == "c":
            assert caught.value.scope.startswith("tenant:acme@") and calls == 5
        else:
            assert caught.value.scope == f"run:{run_id}" and len(model.calls) == 2
    await assert_within(ledger, [tenant])


async def test_max_tokens_is_set_so_the_reservation_is_a_true_bound(tmp_path: Path) -> None:
    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    budget = Budget(scope=BudgetScope.run("r"), limits=Limits(output_tokens=65))
    scripted = ScriptedModel(["one", "two"])  # each reply reports 5 output tokens
    model = BudgetedModel(scripted, max_tokens=60)
    async with BudgetMeter(ledger, [budget]):
        await model.request([UserMessage(content="hi")])  # 0 used + 60 reserved <= 65
        await model.request([UserMessage(content="hi")])  # 5 used + 60 reserved <= 65
        with pytest.raises(BudgetExceeded):  # 10 + 60 > 65: a reply of 60 could overshoot
            await model.request([UserMessage(content="hi")])
    assert [c.settings.max_tokens for c in scripted.calls if c.settings] == [60, 60]
    [spend] = await ledger.spend(["run:r"])
    assert spend.used.output_tokens == 10


async def test_without_a_meter_the_model_is_called_unchanged() -> None:
    scripted = ScriptedModel(["plain"])
    response = await BudgetedModel(scripted).request([UserMessage(content="hi")])
    assert response.message.text == "plain" and scripted.calls[0].settings is None


async def test_wall_time_is_checked_before_each_call_and_cuts_a_slow_one(tmp_path: Path) -> None:
    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    budget = Budget(scope=BudgetScope.run("w"), limits=Limits(wall_time_s=0.3))

    async def slow(call: ModelCall) -> str:
        await asyncio.sleep(5)
        return "late"

    model = BudgetedModel(FunctionModel(slow))
    with pytest.raises(BudgetExceeded) as caught:
        async with BudgetMeter(ledger, [budget]):
            await model.request([UserMessage(content="hi")])
    assert caught.value.limit == "wall_time_s"
    [spend] = await ledger.spend(["run:w"])
    assert 0.25 <= spend.used.wall_time_s < 2
    with pytest.raises(BudgetExceeded):  # the run's wall time persists: a new block is refused
        async with BudgetMeter(ledger, [budget]):
            pass


async def test_reservations_and_denials_are_on_the_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(meter_module, "_tracer", provider.get_tracer("keel.budget"))
    monkeypatch.setattr(registry_module, "_tracer", provider.get_tracer("keel.tools"))
    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    budget = Budget(scope=BudgetScope.run("s"), limits=Limits(tool_calls=1, cost_usd=1.0))
    model = BudgetedModel(runaway(), max_tokens=50)
    agent = Agent(model, tools(), max_steps=10)
    with pytest.raises(BudgetExceeded):
        async with BudgetMeter(ledger, [budget], prices=PRICES):
            await agent.run("go")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    chat = next(s for s in exporter.get_finished_spans() if s.name == "budget runaway")
    attributes = dict(chat.attributes or {})
    assert attributes["keel.budget.scope"] == ("run:s",)
    assert "model_calls=1" in attributes["keel.budget.reserved"]
    assert any(p.startswith("cost_usd=") for p in attributes["keel.budget.settled"])
    assert attributes["keel.budget.exceeded"] is False
    assert any(r.startswith("run:s cost_usd=") for r in attributes["keel.budget.remaining"])
    tool_spans = [s for s in exporter.get_finished_spans() if s.name == "execute_tool lookup"]
    assert len(tool_spans) == 2  # one allowed, one refused
    allowed, refused = (dict(s.attributes or {}) for s in tool_spans)
    assert allowed["keel.budget.reserved"] == ("tool_calls=1",)
    assert allowed["keel.budget.settled"] == ("tool_calls=1",)
    assert refused["keel.budget.exceeded"] is True
    assert refused["keel.budget.limit"] == "tool_calls"
    assert refused["keel.budget.exceeded.scope"] == "run:s"
    assert "execute_tool lookup" in spans


async def test_streaming_calls_are_reserved_and_settled_too(tmp_path: Path) -> None:
    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    budget = Budget(scope=BudgetScope.run("st"), limits=Limits(model_calls=1))
    model = BudgetedModel(ScriptedModel(["streamed"]), max_tokens=20)
    async with BudgetMeter(ledger, [budget]):
        events = [e async for e in model.stream([UserMessage(content="hi")])]
        assert events[-1].kind == "done"
        with pytest.raises(BudgetExceeded):
            async for _ in model.stream([UserMessage(content="hi")]):
                pass
    [spend] = await ledger.spend(["run:st"])
    assert spend.used.model_calls == 1 and spend.used.output_tokens == 5
    assert spend.reserved.model_calls == 0


async def test_an_unreachable_ledger_stops_the_call_before_the_model(tmp_path: Path) -> None:
    import socket

    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from keel.budget.redis import RedisBudgetLedger

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = redis.asyncio.Redis(port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    budget = Budget(scope=BudgetScope.run("down"), limits=Limits(model_calls=10))
    scripted = ScriptedModel([])
    with pytest.raises(StoreError, match="cannot reserve in the Redis budget ledger"):
        async with BudgetMeter(RedisBudgetLedger(client), [budget]):
            await BudgetedModel(scripted).request([UserMessage(content="hi")])
    assert scripted.calls == []  # budgets fail closed: no ledger, no call
