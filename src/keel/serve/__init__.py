"""The Keel service: a runs API with streaming, API keys and tenants, OpenAI-compatible chat.

``create_app(Service.from_settings(settings))`` is the ASGI app ``keel serve`` runs. FastAPI and
uvicorn come with the ``serve`` extra; this package imports them only in ``keel.serve.app``.
"""

from keel.serve.agents import AgentRegistry, DocQAAgent, GraphAgent, LoopAgent, ServedAgent
from keel.serve.base import ApiKey, EventLog, KeyStore, RunRecord, RunRegistry, StoredEvent
from keel.serve.service import Service

__all__ = [
    "AgentRegistry",
    "ApiKey",
    "DocQAAgent",
    "EventLog",
    "GraphAgent",
    "KeyStore",
    "LoopAgent",
    "RunRecord",
    "RunRegistry",
    "Service",
    "ServedAgent",
    "StoredEvent",
    "create_app",
]


def __getattr__(name: str) -> object:
    if name == "create_app":
        try:
            from keel.serve.app import create_app
        except ImportError as e:
            from keel.errors import MissingDependencyError

            package = e.name or "fastapi"
            raise MissingDependencyError(package, "serve", feature="the Keel service") from None
        return create_app
    raise AttributeError(f"module 'keel.serve' has no attribute {name!r}")
