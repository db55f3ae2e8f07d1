"""Orchestrator-workers with the workers on an executor: each subtask runs as a Ray task."""

from __future__ import annotations

import os

from conftest import RayHead

from keel.distributed import LocalExecutor
from keel.graph.patterns import orchestrator_workers
from keel.llm.testing import ScriptedModel

PLAN = "1. Count the moons of Mars\n2. Name them\n- Say which is larger"


def planner() -> ScriptedModel:
    return ScriptedModel([PLAN, "Mars has two moons; Phobos is larger."])


async def test_workers_run_as_ray_tasks_and_results_reach_the_synthesiser(
    ray_head: RayHead,
) -> None:
    from keel.distributed import RayExecutor

    def worker(task: str) -> str:  # a closure: Ray pickles it by value
        return f"done {task.lower()} in {os.getpid()}"

    model = planner()
    graph = orchestrator_workers(model, worker, executor=RayExecutor(ray_head.address))
    result = await graph.compile().run({"goal": "Describe the moons of Mars"})
    state = result.state
    assert state.subtasks == ["Count the moons of Mars", "Name them", "Say which is larger"]
    assert state.output == "Mars has two moons; Phobos is larger."
    pids = {text.rsplit(" ", 1)[1] for text in state.results.values()}
    assert str(os.getpid()) not in pids
    assert state.results["Name them"].startswith("done name them in ")
    assert "- Name them: done name them in" in model.calls[1].last_user_text


async def test_a_model_worker_goes_through_the_executor_too() -> None:
    worker = ScriptedModel(["three", "two", "one"])
    graph = orchestrator_workers(planner(), worker, executor=LocalExecutor(concurrency=1))
    result = await graph.compile().run({"goal": "Describe the moons of Mars"})
    assert sorted(result.state.results.values()) == ["one", "three", "two"]
    assert len(worker.calls) == 3
