"""The agents a service exposes, by name: each builds a graph (per tenant) and maps input to it.

Three kinds come from configuration (``[serve.agents.NAME]``): ``docqa`` answers from one memory
namespace of the calling tenant with ``DocumentQA``; ``agent`` is the tool loop
(``agent_graph``) over a model and a tool registry; ``graph:MODULE:FACTORY`` is any graph a
function returns. Code can register its own ``ServedAgent`` (tests do, with scripted models).
The built-in ``docs`` agent is a ``docqa`` agent over the tenant's ``docs`` namespace.
"""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from keel.errors import AgentNotFoundError, ConfigError, ServeError
from keel.graph.builder import START, Graph
from keel.graph.loop import agent_graph, conversation
from keel.graph.runtime import RunContext
from keel.llm.messages import Message, UserMessage

if TYPE_CHECKING:
    from keel.config import KeelSettings, ServeAgentSettings
    from keel.llm.base import Model
    from keel.serve.memory import TenantMemory
    from keel.tools.registry import ToolRegistry

__all__ = [
    "AgentRegistry",
    "DocQAAgent",
    "DocQAState",
    "GraphAgent",
    "LoopAgent",
    "ServedAgent",
    "agents_from_settings",
]

ModelFactory = Callable[[], "Model"]


class ServedAgent(ABC):
    """An agent the service can run: a graph per tenant, and how requests become its input."""

    name: str
    description: str = ""

    @abstractmethod
    def graph(self, tenant: str) -> Graph[Any]:
        """The graph to run for ``tenant`` (built once per tenant and cached by the service)."""

    def per_tenant(self) -> bool:
        """Whether ``graph`` depends on the tenant (else one compiled graph serves all)."""
        return False

    def input(self, value: str | dict[str, Any]) -> dict[str, Any]:
        """The graph input for a run's ``input`` (text, or the state fields as an object)."""
        if isinstance(value, dict):
            return value
        fields = self.graph("-").state.model_fields
        for name in ("question", "input", "prompt"):
            if name in fields:
                return {name: value}
        if "messages" in fields:
            return {"messages": conversation(value)}
        raise ServeError(
            f"agent {self.name!r} takes its state as a JSON object, not text",
            hint=f"send input as an object with fields {sorted(fields)}",
        )

    def input_from_messages(self, messages: Sequence[Message]) -> dict[str, Any]:
        """The graph input for a chat conversation (default: its last user message as text)."""
        text = next((m.content for m in reversed(messages) if isinstance(m, UserMessage)), "")
        if not text.strip():
            raise ServeError("the conversation has no user message with text")
        return self.input(text)

    def output(self, state: BaseModel) -> str:
        """The answer in a finished state: its ``output`` (or ``answer``) field."""
        for name in ("output", "answer"):
            value = getattr(state, name, None)
            if isinstance(value, str):
                return value
        return state.model_dump_json()


class GraphAgent(ServedAgent):
    """Any graph, from a factory (``graph:MODULE:FACTORY`` in configuration)."""

    def __init__(self, name: str, factory: Callable[[], Graph[Any]], description: str = "") -> None:
        self.name = name
        self.description = description
        self._factory = factory
        self._graph: Graph[Any] | None = None

    def graph(self, tenant: str) -> Graph[Any]:
        if self._graph is None:
            self._graph = self._factory()
        return self._graph


class LoopAgent(ServedAgent):
    """The tool loop over a model and tools; a chat request becomes its whole conversation."""

    def __init__(
        self,
        name: str,
        model: ModelFactory,
        tools: ToolRegistry | None = None,
        *,
        system_prompt: str = "",
        approve: Sequence[str] = (),
        max_turns: int = 8,
        description: str = "",
    ) -> None:
        self.name = name
        self.description = description or "an agent that calls tools"
        self._model = model
        self.tools = tools
        self.system_prompt = system_prompt
        self.approve = tuple(approve)
        self.max_turns = max_turns
        self._graph: Graph[Any] | None = None

    def graph(self, tenant: str) -> Graph[Any]:
        if self._graph is None:
            self._graph = agent_graph(
                self._model(),
                self.tools,
                max_turns=self.max_turns,
                approve=self.approve,
                name=self.name,
            )
        return self._graph

    def input(self, value: str | dict[str, Any]) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        return {"messages": conversation(value, self.system_prompt)}

    def input_from_messages(self, messages: Sequence[Message]) -> dict[str, Any]:
        if not any(isinstance(m, UserMessage) for m in messages):
            raise ServeError("the conversation has no user message")
        return {"messages": conversation(list(messages), self.system_prompt)}


class DocQAState(BaseModel):
    """The state of a ``docqa`` run: the question, the answer and the passages it cites."""

    question: str = Field(min_length=1, max_length=4000, pattern=r"\S")
    output: str = ""
    citations: list[dict[str, Any]] = Field(default_factory=list)


class DocQAAgent(ServedAgent):
    """Answers from the calling tenant's memory namespace, citing the chunks it used."""

    def __init__(
        self,
        name: str,
        model: ModelFactory,
        memory: TenantMemory,
        *,
        namespace: str = "docs",
        top_k: int = 4,
        description: str = "",
    ) -> None:
        self.name = name
        self.description = description or f"answers from the {namespace!r} memory namespace"
        self._model = model
        self.memory = memory
        self.namespace = namespace
        self.top_k = top_k
        self._loaded: Model | None = None

    def per_tenant(self) -> bool:
        return True

    def input(self, value: str | dict[str, Any]) -> dict[str, Any]:
        return value if isinstance(value, dict) else {"question": value}

    def graph(self, tenant: str) -> Graph[DocQAState]:
        from keel.graph.grounded import DocumentQA

        async def qa() -> DocumentQA:
            if self._loaded is None:
                self._loaded = await asyncio.to_thread(self._model)
            return DocumentQA(
                self._loaded,
                await self.memory.retriever(),
                namespace=self.memory.namespace(tenant, self.namespace),
                top_k=self.top_k,
                name=self.name,
            )

        async def answer(state: DocQAState, ctx: RunContext) -> dict[str, Any]:
            result = await (await qa()).ask(state.question)
            ctx.emit("token", result.answer)
            cited = [c.model_dump(mode="json") for c in result.citations]
            return {"output": result.answer, "citations": cited}

        graph = Graph(DocQAState, name=self.name)
        graph.add_node("answer", answer)
        graph.add_edge(START, "answer")
        return graph


class AgentRegistry:
    """The agents a service exposes, by name."""

    def __init__(self, agents: Sequence[ServedAgent] = ()) -> None:
        self._agents: dict[str, ServedAgent] = {}
        for agent in agents:
            self.add(agent)

    def add(self, agent: ServedAgent) -> ServedAgent:
        self._agents[agent.name] = agent
        return agent

    def get(self, name: str) -> ServedAgent:
        agent = self._agents.get(name)
        if agent is None:
            raise AgentNotFoundError(
                f"no agent named {name!r}", hint=f"available: {', '.join(sorted(self._agents))}"
            )
        return agent

    def names(self) -> list[str]:
        return sorted(self._agents)

    def __iter__(self) -> Any:
        return iter(self._agents[n] for n in self.names())


def _import(target: str, what: str) -> Any:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what} {target!r} is not MODULE:ATTRIBUTE")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {module_name!r} for {what}: {e}") from None
    value = getattr(module, attribute, None)
    if value is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attribute!r} ({what})")
    return value


def _agent_from_config(
    name: str, spec: ServeAgentSettings, settings: KeelSettings, memory: TenantMemory
) -> ServedAgent:
    from keel.serve.tenancy import tenant_cached
    from keel.stack import open_model

    # The service puts the cache on itself, namespaced per tenant (open_model's is not).
    uncached = settings.model_copy(
        update={"cache": settings.cache.model_copy(update={"enabled": False})}
    )

    def model() -> Model:
        built = open_model(uncached, spec.model)
        local = (spec.model or settings.llm.model).partition(":")[0] == "local"
        temperature = settings.llm.temperature if local else None
        return tenant_cached(built, settings, default_temperature=temperature)

    if spec.kind == "docqa":
        return DocQAAgent(
            name,
            model,
            memory,
            namespace=spec.namespace,
            top_k=settings.memory.top_k,
            description=spec.description,
        )
    if spec.kind == "agent":
        tools = _import(spec.tools, f"the tools of agent {name!r}") if spec.tools else None
        if tools is not None and getattr(tools, "settings", None) is not None:
            from keel.tools.registry import rate_limits_from_settings

            if tools.settings.rate_limits is None:  # [tools] redis_url: shared buckets
                tools.settings.rate_limits = rate_limits_from_settings(settings)
        return LoopAgent(
            name,
            model,
            tools,
            system_prompt=spec.system_prompt,
            approve=spec.approve,
            max_turns=spec.max_turns,
            description=spec.description,
        )
    if spec.kind.startswith("graph:"):
        from keel.graph.cli import load_graph

        target = spec.kind.removeprefix("graph:")
        return GraphAgent(name, lambda: load_graph(target), spec.description)
    raise ConfigError(
        f"agent {name!r} has unknown kind {spec.kind!r}",
        hint="use 'docqa', 'agent' or 'graph:MODULE:FACTORY'",
    )


def agents_from_settings(settings: KeelSettings, memory: TenantMemory) -> AgentRegistry:
    """The built-in ``docs`` agent (unless turned off) and every ``[serve.agents.NAME]``."""
    registry = AgentRegistry()
    if settings.serve.docs_agent:
        from keel.config import ServeAgentSettings

        docs = ServeAgentSettings(
            kind="docqa", description="answers from your documents, citing them"
        )
        registry.add(_agent_from_config("docs", docs, settings, memory))
    for name, spec in settings.serve.agents.items():
        registry.add(_agent_from_config(name, spec, settings, memory))
    return registry
