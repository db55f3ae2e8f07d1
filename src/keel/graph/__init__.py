"""The control plane: a durable graph engine, the agent loop and the document-grounded workflow.

``keel.graph.grounded`` needs the memory layer's optional dependencies only when it runs.
"""

from keel.graph.agent import Agent, AgentResult
from keel.graph.builder import END, START, Graph, RetryPolicy, Send
from keel.graph.checkpoint import Checkpoint, Checkpointer, MemoryCheckpointer, SqliteCheckpointer
from keel.graph.engine import CompiledGraph, RunResult
from keel.graph.loop import AgentState, agent_graph, conversation
from keel.graph.runtime import Event, Interrupt, RunContext, side_effect
from keel.graph.state import GraphState, NodeFailure, Reducer, append, merge

__all__ = [
    "END",
    "START",
    "Agent",
    "AgentResult",
    "AgentState",
    "Checkpoint",
    "Checkpointer",
    "CompiledGraph",
    "Event",
    "Graph",
    "GraphState",
    "Interrupt",
    "MemoryCheckpointer",
    "NodeFailure",
    "Reducer",
    "RetryPolicy",
    "RunContext",
    "RunResult",
    "Send",
    "SqliteCheckpointer",
    "agent_graph",
    "append",
    "conversation",
    "merge",
    "side_effect",
]
