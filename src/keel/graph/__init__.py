"""The control plane: the agent loop and the document-grounded workflow.

``keel.graph.grounded`` needs the memory layer's optional dependencies only when it runs.
"""

from keel.graph.agent import Agent, AgentResult

__all__ = ["Agent", "AgentResult"]
