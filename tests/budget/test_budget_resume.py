"""A run stopped by its budget keeps its partial state and resumes with a larger budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.budget import Budget, BudgetedModel, BudgetMeter, BudgetScope, Limits, SqliteBudgetLedger
from keel.errors import BudgetExceeded
from keel.graph import SqliteCheckpointer, agent_graph
from keel.graph.loop import AgentState, conversation
from keel.llm.messages import ToolCallPart, ToolMessage
from keel.llm.testing import FunctionModel, ModelCall
from keel.tools import ToolRegistry

WANTED = 4


def worker(sent: list[int]) -> tuple[FunctionModel, ToolRegistry]:
    """A model that sends WANTED emails one per turn, then answers; an email tool with effects."""

    def reply(call: ModelCall) -> str | ToolCallPart:
        done = sum(isinstance(m, ToolMessage) for m in call.messages)
        if done >= WANTED:
            return f"sent {done} emails"
        return ToolCallPart(id=f"call-{done + 1}", name="send_email", arguments={"n": done + 1})

    registry = ToolRegistry()

    @registry.tool(effects="sends_outside")
    def send_email(n: int) -> str:
        """Send email number n."""
        sent.append(n)
        return f"email {n} sent"

    return FunctionModel(reply), registry


@pytest.mark.parametrize(
    ("limits", "stopped_by"),
    [({"tool_calls": 2}, "tool_calls"), ({"model_calls": 2}, "model_calls")],
)
async def test_budget_stop_saves_partial_state_and_resume_finishes_without_repeats(
    tmp_path: Path, limits: dict[str, int], stopped_by: str
) -> None:
    sent: list[int] = []
    model, registry = worker(sent)
    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    checkpoints = SqliteCheckpointer(tmp_path / "runs.db")
    graph = agent_graph(BudgetedModel(model), registry, max_turns=20).compile(
        checkpointer=checkpoints
    )
    small = Budget(scope=BudgetScope.run("job"), limits=Limits(**limits))  # type: ignore[arg-type]
    with pytest.raises(BudgetExceeded) as caught:
        async with BudgetMeter(ledger, [small]):
            await graph.run({"messages": conversation("send the emails")}, run_id="job")
    e = caught.value
    assert e.limit == stopped_by and e.run_id == "job"
    assert isinstance(e.state, AgentState)
    results = [m for m in e.state.messages if isinstance(m, ToolMessage)]
    assert [m.content for m in results] == [f"email {n} sent" for n in sent]
    assert sent == [1, 2]
    saved, checkpoint = await graph.get_state("job")
    assert checkpoint.status == "running" and saved.messages == e.state.messages

    # A new process (new objects on the same files) resumes with a larger budget.
    model2, registry2 = worker(sent)
    resumed = agent_graph(BudgetedModel(model2), registry2, max_turns=20).compile(
        checkpointer=SqliteCheckpointer(tmp_path / "runs.db")
    )
    larger = Budget(scope=BudgetScope.run("job"), limits=Limits(tool_calls=10, model_calls=10))
    async with BudgetMeter(SqliteBudgetLedger(tmp_path / "budget.db"), [larger]):
        result = await resumed.resume("job")
    assert result.status == "done" and result.state.output == f"sent {WANTED} emails"
    assert sent == [1, 2, 3, 4]  # no email sent twice
    [spend] = await ledger.spend(["run:job"])
    assert spend.used.tool_calls == WANTED
    assert spend.used.model_calls == len(model.calls) + len(model2.calls) == WANTED + 1


async def test_a_refused_parallel_call_does_not_repeat_its_sibling_on_resume(
    tmp_path: Path,
) -> None:
    sent: list[int] = []

    def reply(call: ModelCall) -> str | list[ToolCallPart]:
        if any(isinstance(m, ToolMessage) for m in call.messages):
            return "both sent"
        return [
            ToolCallPart(id="a", name="send_email", arguments={"n": 1}),
            ToolCallPart(id="b", name="send_email", arguments={"n": 2}),
        ]

    registry = ToolRegistry()

    @registry.tool(effects="sends_outside")
    def send_email(n: int) -> str:
        """Send email number n."""
        sent.append(n)
        return f"email {n} sent"

    ledger = SqliteBudgetLedger(tmp_path / "budget.db")
    graph = agent_graph(BudgetedModel(FunctionModel(reply)), registry).compile(
        checkpointer=SqliteCheckpointer(tmp_path / "runs.db")
    )
    one_call = Budget(scope=BudgetScope.run("p"), limits=Limits(tool_calls=1))
    with pytest.raises(BudgetExceeded):
        async with BudgetMeter(ledger, [one_call]):
            await graph.run({"messages": conversation("send both")}, run_id="p")
    assert sent == [1]  # the first call ran (and was journalled), the second was refused
    more = Budget(scope=BudgetScope.run("p"), limits=Limits(tool_calls=5))
    async with BudgetMeter(ledger, [more]):
        result = await graph.resume("p")
    assert result.state.output == "both sent"
    assert sent == [1, 2]
