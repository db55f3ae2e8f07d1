"""Keel: agent infrastructure, from one embedded machine to a cluster.

The names below are imported on first use, so ``import keel`` stays cheap: it loads no model
runtime, no numpy and no vector index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.config import KeelSettings, load_settings
    from keel.errors import KeelError
    from keel.graph.agent import Agent, AgentResult
    from keel.graph.grounded import DocumentQA, GroundedAnswer
    from keel.llm.base import Model
    from keel.tools.registry import ToolRegistry

__all__ = [
    "Agent",
    "AgentResult",
    "DocumentQA",
    "GroundedAnswer",
    "KeelError",
    "KeelSettings",
    "Model",
    "ToolRegistry",
    "load_settings",
]

_WHERE = {
    "Agent": "keel.graph.agent",
    "AgentResult": "keel.graph.agent",
    "DocumentQA": "keel.graph.grounded",
    "GroundedAnswer": "keel.graph.grounded",
    "KeelError": "keel.errors",
    "KeelSettings": "keel.config",
    "Model": "keel.llm.base",
    "ToolRegistry": "keel.tools.registry",
    "load_settings": "keel.config",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
