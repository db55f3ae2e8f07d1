"""The workflow patterns, driven by scripted and function models (offline, deterministic)."""

import asyncio

from keel.graph.handoff import HandoffAgent, handoff
from keel.graph.loop import conversation
from keel.graph.patterns import (
    evaluator_optimizer,
    orchestrator_workers,
    prompt_chain,
    router,
    sectioning,
    voting,
)
from keel.llm.testing import FunctionModel, ModelCall, ScriptedModel, tool_call
from keel.tools import ToolRegistry


async def test_prompt_chain_passes_outputs_along_and_a_gate_can_stop_it() -> None:
    steps = [("outline", "Outline: {input}"), ("write", "Write from: {input}")]
    model = ScriptedModel(["1. intro 2. body", "Final text"])
    result = await prompt_chain(model, steps).compile().run({"input": "graphs"})
    assert result.state.outputs == ["1. intro 2. body", "Final text"]
    assert (result.state.output, result.state.stopped) == ("Final text", "done")
    assert model.calls[1].last_user_text == "Write from: 1. intro 2. body"

    gated = prompt_chain(
        ScriptedModel(["no numbers"]), steps, gates={"outline": lambda t: "1." in t}
    )
    stopped = await gated.compile().run({"input": "graphs"})
    assert stopped.state.stopped == "gate:outline"
    assert stopped.state.outputs == ["no numbers"]


async def test_router_dispatches_on_the_classification() -> None:
    refunds = ScriptedModel(["Your refund is on its way."])
    graph = router(
        ScriptedModel(["Billing."]),
        {"technical": ScriptedModel([]), "billing": refunds},
    )
    result = await graph.compile().run({"input": "I was charged twice"})
    assert (result.state.route, result.state.output) == ("billing", "Your refund is on its way.")
    unclear = (
        await router(ScriptedModel(["hmm"]), {"general": lambda s: {"output": "hi"}})
        .compile()
        .run()
    )
    assert (unclear.state.route, unclear.state.output) == ("general", "hi")


async def test_sectioning_runs_sections_in_parallel_and_combines_in_order() -> None:
    active = 0
    peak = 0

    async def answer(call: ModelCall) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return call.last_user_text.upper()

    sections = {"pros": "pros of {input}", "cons": "cons of {input}"}
    result = await sectioning(FunctionModel(answer), sections).compile().run({"input": "sqlite"})
    assert result.state.output == "pros: PROS OF SQLITE\ncons: CONS OF SQLITE"
    assert peak == 2


async def test_voting_takes_the_majority() -> None:
    model = ScriptedModel(["Yes", "no", "YES "])
    result = await voting(model, "Is {input} safe?", voters=3).compile().run({"input": "x"})
    assert result.state.output == "yes"
    assert len(result.state.results) == 3


async def test_orchestrator_plans_fans_out_to_workers_and_synthesises() -> None:
    planner = ScriptedModel(["1. find facts\n2. check facts", "Report: facts found and checked"])

    def work(call: ModelCall) -> str:
        return f"did {call.last_user_text}"

    worker = FunctionModel(work)
    result = await orchestrator_workers(planner, worker).compile().run({"goal": "a report"})
    assert result.state.subtasks == ["find facts", "check facts"]
    assert result.state.results == {
        "find facts": "did find facts",
        "check facts": "did check facts",
    }
    assert result.state.output == "Report: facts found and checked"
    assert "did check facts" in planner.calls[1].last_user_text


async def test_evaluator_optimizer_revises_until_accepted_or_out_of_rounds() -> None:
    generator = ScriptedModel(["draft one", "draft two"])
    evaluator = ScriptedModel(["Too vague.", "ACCEPT"])
    graph = evaluator_optimizer(generator, evaluator, max_rounds=3)
    result = await graph.compile().run({"task": "write a haiku"})
    assert (result.state.draft, result.state.accepted, result.state.rounds) == (
        "draft two",
        True,
        2,
    )
    assert "Too vague." in generator.calls[1].last_user_text

    stubborn = evaluator_optimizer(
        ScriptedModel(["a", "b"]), ScriptedModel(["no", "no"]), max_rounds=2
    )
    capped = await stubborn.compile().run({"task": "x"})
    assert (capped.state.accepted, capped.state.rounds, capped.state.feedback) == (
        False,
        2,
        ["no", "no"],
    )


async def test_handoff_passes_the_conversation_to_another_agent() -> None:
    tools = ToolRegistry()

    @tools.tool
    def refund(order: str) -> str:
        """Refund an order."""
        return f"refunded {order}"

    triage = HandoffAgent(
        "triage", ScriptedModel([tool_call("transfer_to_billing")]), handoffs=("billing",)
    )
    billing_model = ScriptedModel([tool_call("refund", order="A1"), "Refunded order A1."])
    billing = HandoffAgent("billing", billing_model, "You handle billing.", tools)
    graph = handoff([triage, billing])
    result = await graph.compile().run({"messages": conversation("refund order A1")})
    assert result.state.output == "Refunded order A1."
    assert result.state.trail == ["triage", "billing"]
    assert result.path == ("triage", "billing", "billing")
    assert billing_model.calls[0].messages[0].content == "You handle billing."


async def test_handoff_ping_pong_is_stopped_by_the_turn_limit() -> None:
    a = HandoffAgent("a", ScriptedModel([tool_call("transfer_to_b")] * 2), handoffs=("b",))
    b = HandoffAgent("b", ScriptedModel([tool_call("transfer_to_a")] * 2), handoffs=("a",))
    result = await handoff([a, b], max_turns=4).compile().run()
    assert result.state.stopped == "max_turns"
    assert result.state.trail == ["a", "b", "a", "b", "a"]
