"""The workflow patterns of "Building effective agents" as small graphs over the ``Model`` protocol.

Each function returns a ``Graph`` (compile it, add a checkpointer, embed it as a subgraph, or
draw it): ``prompt_chain`` (steps with gates), ``router`` (classify, then dispatch),
``sectioning`` and ``voting`` (parallelization), ``orchestrator_workers`` (plan, fan out to
workers, synthesise), ``evaluator_optimizer`` (generate, critique, revise) and ``handoff``
(agents passing the conversation to each other). Prompts are plain text templates formatted with
``str.format``; models may differ per role (e.g. a cheaper model for workers).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field

from keel.graph.builder import END, START, Graph, Send
from keel.graph.state import GraphState, append, merge
from keel.llm.base import Model
from keel.llm.messages import Message, SystemMessage, UserMessage

if TYPE_CHECKING:
    from keel.distributed.base import Executor

__all__ = [
    "ChainState",
    "EvaluationState",
    "OrchestratorState",
    "ParallelState",
    "RouteState",
    "evaluator_optimizer",
    "orchestrator_workers",
    "prompt_chain",
    "router",
    "sectioning",
    "voting",
]

Gate = Callable[[str], bool]


async def ask(model: Model, prompt: str, system: str = "") -> str:
    """One model turn: the reply's text."""
    messages: list[Message] = [SystemMessage(content=system)] if system else []
    messages.append(UserMessage(content=prompt))
    return (await model.request(messages)).message.text.strip()


class ChainState(BaseModel):
    """A prompt chain: the input, each step's output, the last output and why it stopped."""

    input: str = ""
    outputs: Annotated[list[str], append] = Field(default_factory=list)
    output: str = ""
    stopped: str = ""
    """``done``, or ``gate:<step name>`` when a gate rejected that step's output."""


def prompt_chain(
    model: Model,
    steps: Sequence[tuple[str, str]],
    *,
    gates: Mapping[str, Gate] | None = None,
    name: str = "prompt-chain",
) -> Graph[ChainState]:
    """Run prompts in order, each formatted with ``{input}`` (the previous output, or the
    input); after a step with a gate, a failing check ends the chain early."""
    if not steps:
        raise ValueError("a chain needs at least one step")
    gates = dict(gates or {})
    graph = Graph(ChainState, name=name)
    names = [step for step, _ in steps]
    for index, (step, template) in enumerate(steps):

        async def node(state: ChainState, template: str = template) -> dict[str, Any]:
            text = await ask(model, template.format(input=state.output or state.input))
            return {"outputs": [text], "output": text}

        graph.add_node(step, node)
        following = names[index + 1] if index + 1 < len(names) else "finish"
        if step in gates:

            def check(state: ChainState, step: str = step, following: str = following) -> str:
                return following if gates[step](state.output) else f"reject_{step}"

            graph.add_node(f"reject_{step}", lambda s, step=step: {"stopped": f"gate:{step}"})
            graph.add_edge(f"reject_{step}", END)
            graph.add_conditional_edges(step, check, [following, f"reject_{step}"])
        else:
            graph.add_edge(step, following)
    graph.add_node("finish", lambda s: {"stopped": "done"})
    graph.add_edge(START, names[0])
    return graph


class RouteState(BaseModel):
    """Routing: the input, the chosen route and the handler's output."""

    input: str = ""
    route: str = ""
    output: str = ""


def router(
    classifier: Model,
    routes: Mapping[str, Model | Callable[[RouteState], Any]],
    *,
    instructions: str = "Classify the request. Answer with one word, one of: {routes}.",
    default: str | None = None,
    name: str = "router",
) -> Graph[RouteState]:
    """Classify the input with ``classifier`` (its answer must name a route), then send it to
    that route: a model answering the input, or a node function. Unclear answers go to
    ``default`` (the first route if not given)."""
    if not routes:
        raise ValueError("a router needs at least one route")
    fallback = default or next(iter(routes))
    labels = list(routes)

    async def classify(state: RouteState) -> dict[str, Any]:
        system = instructions.format(routes=", ".join(labels))
        answer = (await ask(classifier, state.input, system)).lower()
        found = [r for r in labels if re.search(rf"\b{re.escape(r.lower())}\b", answer)]
        return {"route": found[0] if len(found) == 1 else fallback}

    graph = Graph(RouteState, name=name)
    graph.add_node("classify", classify)
    for label, handler in routes.items():
        if isinstance(handler, Model):

            async def answer(state: RouteState, model: Model = handler) -> dict[str, Any]:
                return {"output": await ask(model, state.input)}

            graph.add_node(label, answer)
        else:
            graph.add_node(label, handler)
        graph.add_edge(label, END)
    graph.add_edge(START, "classify")
    graph.add_conditional_edges("classify", lambda s: s.route, labels)
    return graph


class ParallelState(BaseModel):
    """Parallel work: the input, one result per branch, and the combined output."""

    input: str = ""
    results: Annotated[dict[str, str], merge] = Field(default_factory=dict)
    output: str = ""


def sectioning(
    model: Model,
    sections: Mapping[str, str],
    *,
    combine: Callable[[Mapping[str, str]], str] | None = None,
    name: str = "sectioning",
) -> Graph[ParallelState]:
    """Run independent prompts (``{input}`` templates, by section name) in parallel, then
    combine their results (default: ``name: result`` lines in section order)."""
    order = list(sections)

    async def work(arg: dict[str, str]) -> dict[str, Any]:
        text = await ask(model, arg["prompt"])
        return {"results": {arg["section"]: text}}

    def fan_out(state: ParallelState) -> list[Send]:
        return [
            Send("section", {"section": s, "prompt": t.format(input=state.input)})
            for s, t in sections.items()
        ]

    def join(state: ParallelState) -> dict[str, Any]:
        if combine is not None:
            return {"output": combine(state.results)}
        return {"output": "\n".join(f"{s}: {state.results[s]}" for s in order)}

    graph = Graph(ParallelState, name=name)
    graph.add_node("section", work)
    graph.add_node("combine", join)
    graph.add_conditional_edges(START, fan_out, ["section"])
    graph.add_edge("section", "combine")
    return graph


def voting(
    model: Model,
    prompt: str,
    *,
    voters: int = 3,
    normalise: Callable[[str], str] = lambda text: text.strip().lower(),
    name: str = "voting",
) -> Graph[ParallelState]:
    """Ask the same ``{input}`` prompt ``voters`` times in parallel; the output is the most
    common (normalised) answer, ties going to the earliest voter."""
    if voters < 1:
        raise ValueError("voting needs at least one voter")

    async def vote(arg: dict[str, str]) -> dict[str, Any]:
        return {"results": {arg["voter"]: normalise(await ask(model, arg["prompt"]))}}

    def fan_out(state: ParallelState) -> list[Send]:
        text = prompt.format(input=state.input)
        return [Send("vote", {"voter": f"voter{i}", "prompt": text}) for i in range(voters)]

    def tally(state: ParallelState) -> dict[str, Any]:
        ordered = [state.results[f"voter{i}"] for i in range(voters)]
        return {"output": Counter(ordered).most_common(1)[0][0]}

    graph = Graph(ParallelState, name=name)
    graph.add_node("vote", vote)
    graph.add_node("tally", tally)
    graph.add_conditional_edges(START, fan_out, ["vote"])
    graph.add_edge("vote", "tally")
    return graph


class OrchestratorState(BaseModel):
    """Orchestrator-workers: the goal, the planned subtasks, each worker's result, the answer."""

    goal: str = ""
    subtasks: list[str] = Field(default_factory=list)
    results: Annotated[dict[str, str], merge] = Field(default_factory=dict)
    output: str = ""


def orchestrator_workers(
    planner: Model,
    worker: Model | Callable[[str], Any],
    *,
    synthesiser: Model | None = None,
    max_subtasks: int = 8,
    executor: Executor | None = None,
    name: str = "orchestrator-workers",
) -> Graph[OrchestratorState]:
    """The planner lists subtasks (one per line) for the goal; a worker (maybe a cheaper model,
    or a function from subtask to text, plain or async) does each in parallel; the synthesiser
    (default: the planner) writes the final answer. With an ``executor`` (e.g. a
    ``RayExecutor``) each worker call runs there, so the worker must be picklable."""
    final = synthesiser or planner
    run_worker: Callable[[str], Any] = (
        functools.partial(ask, worker) if isinstance(worker, Model) else worker
    )

    async def plan(state: OrchestratorState) -> dict[str, Any]:
        text = await ask(
            planner,
            f"Goal: {state.goal}\nList the subtasks needed, one per line, nothing else.",
        )
        lines = [re.sub(r"^\s*(?:[-*]|\d+[.)])\s*", "", line).strip() for line in text.splitlines()]
        return {"subtasks": [line for line in lines if line][:max_subtasks]}

    async def work(task: str) -> dict[str, Any]:
        if executor is not None:
            [outcome] = await executor.map(run_worker, [task])
            return {"results": {task: str(outcome.unwrap())}}
        answer = run_worker(task)
        return {"results": {task: str(await answer if inspect.isawaitable(answer) else answer)}}

    async def synthesise(state: OrchestratorState) -> dict[str, Any]:
        done = "\n".join(f"- {t}: {state.results.get(t, '')}" for t in state.subtasks)
        text = await ask(final, f"Goal: {state.goal}\nResults of the subtasks:\n{done}\nAnswer.")
        return {"output": text}

    graph = Graph(OrchestratorState, name=name)
    graph.add_node("plan", plan)
    graph.add_node("worker", work)
    graph.add_node("synthesise", synthesise)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges(
        "plan",
        lambda s: [Send("worker", t) for t in s.subtasks] or "synthesise",
        ["worker", "synthesise"],
    )
    graph.add_edge("worker", "synthesise")
    return graph


class EvaluationState(GraphState):
    """Evaluator-optimizer: the task, the current draft, the critiques and the verdict."""

    task: str = ""
    draft: str = ""
    feedback: Annotated[list[str], append] = Field(default_factory=list)
    rounds: int = 0
    accepted: bool = False


def evaluator_optimizer(
    generator: Model,
    evaluator: Model,
    *,
    max_rounds: int = 3,
    accept: Callable[[str], bool] = lambda verdict: verdict.upper().startswith("ACCEPT"),
    name: str = "evaluator-optimizer",
) -> Graph[EvaluationState]:
    """Generate a draft, have the evaluator answer ``ACCEPT`` or a critique, revise with the
    critique; stop when accepted or after ``max_rounds`` drafts (``accepted`` says which)."""
    if max_rounds < 1:
        raise ValueError("max_rounds must be at least 1")

    async def generate(state: EvaluationState) -> dict[str, Any]:
        prompt = f"Task: {state.task}"
        if state.feedback:
            prompt += f"\nYour last draft:\n{state.draft}\nCritique:\n{state.feedback[-1]}\nRevise."
        return {"draft": await ask(generator, prompt), "rounds": state.rounds + 1}

    async def evaluate(state: EvaluationState) -> dict[str, Any]:
        verdict = await ask(
            evaluator,
            f"Task: {state.task}\nDraft:\n{state.draft}\n"
            "Answer ACCEPT if the draft fully does the task, otherwise give a short critique.",
        )
        return {"accepted": True} if accept(verdict) else {"feedback": [verdict]}

    def next_step(state: EvaluationState) -> str:
        return END if state.accepted or state.rounds >= max_rounds else "generate"

    graph = Graph(EvaluationState, name=name)
    graph.add_node("generate", generate)
    graph.add_node("evaluate", evaluate)
    graph.add_edge(START, "generate").add_edge("generate", "evaluate")
    graph.add_conditional_edges("evaluate", next_step, ["generate", END])
    return graph
