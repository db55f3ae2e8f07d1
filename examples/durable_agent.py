"""The agent loop as a durable graph: a tool call waits for a human, the process could exit,
and the run resumes from its SQLite checkpoint with the answer; the email is sent once.

Runs offline: python examples/durable_agent.py
"""

import asyncio
import tempfile
from pathlib import Path

from keel.graph import CompiledGraph, SqliteCheckpointer, side_effect
from keel.graph.loop import AgentState, agent_graph, conversation
from keel.llm.testing import ScriptedModel, tool_call
from keel.tools import ToolRegistry

tools = ToolRegistry()
outbox: list[str] = []


@tools.tool
@side_effect
def send_email(to: str, body: str) -> str:
    """Send an email."""
    outbox.append(to)
    return f"sent to {to}"


def build(model: ScriptedModel, path: Path) -> CompiledGraph[AgentState]:
    graph = agent_graph(model, tools, approve={"send_email"}, max_turns=4)
    return graph.compile(checkpointer=SqliteCheckpointer(path))


async def main() -> None:
    path = Path(tempfile.mkdtemp()) / "runs.db"
    model = ScriptedModel(
        [tool_call("send_email", to="team@example.com", body="Release is out"), "Email sent."]
    )
    first = build(model, path)
    paused = await first.run({"messages": conversation("Tell the team")}, run_id="release")
    print(paused.status, paused.interrupts[0].value)
    # ... later, in another process: a new graph object on the same file resumes the run.
    later = build(model, path)
    done = await later.resume("release", {"approved": True})
    print(done.state.output, outbox)


if __name__ == "__main__":
    asyncio.run(main())
