"""A registry of typed Python functions that a model may call, several versions of each.

A tool's JSON schema comes from its type hints and docstring; each tool has a name, a semantic
version and a schema hash, declared effects and the secrets it needs. A call is validated before
the handler runs, and every failure (unknown tool, bad arguments, a handler that raised, hung or
returned something unusable) comes back as a ``ToolResult`` with a structured error the model can
read, never as an exception that ends the run.

Views compose: ``select``, ``filter``, ``prefix``, ``rename`` and ``require_approval`` each return
a new registry over the same tools (sharing their rate limits and breakers), so an agent is given
exactly the tools, versions and names it should see.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from keel.errors import ConfigError, ToolNotFoundError
from keel.llm.messages import ToolCallPart, ToolDefinition
from keel.observe import semconv as sc
from keel.observe.content import capture_enabled, captured
from keel.tools.base import Effect, Tool, ToolFailure, ToolResult, parse_version
from keel.tools.executor import CallSettings, execute
from keel.tools.resilience import RateLimitBackend, ToolPolicy
from keel.tools.schema import arguments_model, parse_docstring, secret_parameters
from keel.tools.secrets import Redactor, SecretProvider

if TYPE_CHECKING:
    from keel.config import KeelSettings

__all__ = ["Tool", "ToolRegistry", "ToolResult", "rate_limits_from_settings"]

_tracer = trace.get_tracer("keel.tools")
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
Version = tuple[int, int, int]


def _check_name(name: str) -> None:
    if not name or not set(name) <= _NAME_OK or len(name) > 64:
        raise ValueError(f"tool name {name!r}: use 1-64 letters, digits, '_' or '-'")


def _effects(effects: Effect | str | Iterable[Effect | str] | None) -> frozenset[Effect]:
    if effects is None:
        return frozenset()
    if isinstance(effects, str):
        effects = [effects]
    return frozenset(Effect(e) for e in effects)


def rate_limits_from_settings(settings: KeelSettings) -> RateLimitBackend | None:
    """The Redis rate-limit backend of ``tools.redis_url``, or None (buckets in each process)."""
    url = settings.tools.redis_url
    if not url:
        return None
    import redis.asyncio

    from keel.tools.redis_limits import RedisRateLimits

    try:
        client = redis.asyncio.Redis.from_url(url)
    except ValueError:
        raise ConfigError("invalid tools.redis_url (expected redis://HOST:PORT/DB)") from None
    return RedisRateLimits(client, prefix=settings.tools.rate_limit_prefix)


class ToolRegistry:
    """Tools by name and version. Register with ``@registry.tool`` or ``registry.register(fn)``.

    ``secrets`` provides the values of secret parameters at call time; ``default_timeout`` bounds
    a tool that sets none; ``max_result_chars`` bounds the text of a result the model sees.
    """

    def __init__(
        self,
        *,
        secrets: SecretProvider | None = None,
        default_timeout: float | None = 60.0,
        max_result_chars: int = 20_000,
        rate_limits: RateLimitBackend | None = None,
    ) -> None:
        self._versions: dict[str, dict[Version, Tool]] = {}
        self._pins: dict[str, Version] = {}
        self.settings = CallSettings(
            secrets=secrets,
            redactor=Redactor(),
            default_timeout=default_timeout,
            max_result_chars=max_result_chars,
            rng=random.Random(),
            rate_limits=rate_limits,
        )

    @classmethod
    def from_settings(
        cls,
        settings: KeelSettings,
        *,
        secrets: SecretProvider | None = None,
        default_timeout: float | None = 60.0,
        max_result_chars: int = 20_000,
    ) -> ToolRegistry:
        """A registry whose rate limits live where ``[tools]`` says: with ``tools.redis_url``
        (by default ``[shared] redis_url``) in Redis, so every process built from the same
        settings takes from the same bucket per tool."""
        return cls(
            secrets=secrets,
            default_timeout=default_timeout,
            max_result_chars=max_result_chars,
            rate_limits=rate_limits_from_settings(settings),
        )

    @property
    def redactor(self) -> Redactor:
        """Knows every secret value this registry has handed to a tool, to scrub them from text."""
        return self.settings.redactor

    @overload
    def tool(self, function: Callable[..., Any], /) -> Callable[..., Any]: ...
    @overload
    def tool(
        self,
        *,
        name: str | None = None,
        version: str = "1",
        description: str | None = None,
        examples: Iterable[Mapping[str, Any]] = (),
        timeout: float | None = None,
        effects: Effect | str | Iterable[Effect | str] | None = None,
        secrets: Iterable[str] = (),
        requires_approval: bool = False,
        policy: ToolPolicy | None = None,
        targets: Iterable[str] = (),
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...

    def tool(
        self,
        function: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        version: str = "1",
        description: str | None = None,
        examples: Iterable[Mapping[str, Any]] = (),
        timeout: float | None = None,
        effects: Effect | str | Iterable[Effect | str] | None = None,
        secrets: Iterable[str] = (),
        requires_approval: bool = False,
        policy: ToolPolicy | None = None,
        targets: Iterable[str] = (),
    ) -> Any:
        """Decorator form of ``register``; returns the function unchanged."""

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register(
                fn,
                name=name,
                version=version,
                description=description,
                examples=examples,
                timeout=timeout,
                effects=effects,
                secrets=secrets,
                requires_approval=requires_approval,
                policy=policy,
                targets=targets,
            )
            return fn

        return decorate if function is None else decorate(function)

    def register(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        version: str = "1",
        description: str | None = None,
        examples: Iterable[Mapping[str, Any]] = (),
        timeout: float | None = None,
        effects: Effect | str | Iterable[Effect | str] | None = None,
        secrets: Iterable[str] = (),
        requires_approval: bool = False,
        policy: ToolPolicy | None = None,
        targets: Iterable[str] = (),
    ) -> Tool:
        """Add ``function`` as a tool; raises ``ValueError`` on a duplicate name@version.

        ``effects`` declares what a call may do (``Effect``); undeclared counts as side-effecting.
        ``secrets`` names secrets the tool needs besides its ``Secret``-annotated parameters.
        ``policy`` sets retries, rate limit, circuit breaker, concurrency and result size.
        ``targets`` names the parameters that say where an effect lands (recipient, URL,
        account, path), for ``keel.guard``'s policy.
        """
        tool_name = name or function.__name__
        _check_name(tool_name)
        if parse_version(version) in self._versions.get(tool_name, {}):
            raise ValueError(f"a tool named {tool_name!r} version {version} is already registered")
        arguments = arguments_model(function, f"{tool_name}_arguments")
        targets = tuple(targets)
        unknown = [t for t in targets if t not in arguments.model_fields]
        if unknown:
            raise ValueError(f"tool {tool_name!r}: targets {unknown} are not parameters of it")
        injected = secret_parameters(function)
        summary, _ = parse_docstring(function.__doc__)
        checked = tuple(arguments.model_validate(ex).model_dump(mode="json") for ex in examples)
        needed = tuple(dict.fromkeys([*injected.values(), *secrets]))
        policy = policy if policy is not None else ToolPolicy()
        policy.key = policy.key or f"{tool_name}@{version}"
        tool = Tool(
            name=tool_name,
            description=description if description is not None else summary,
            version=version,
            arguments=arguments,
            handler=function,
            examples=checked,
            timeout=timeout,
            effects=_effects(effects),
            secrets=needed,
            secret_parameters=tuple(injected.items()),
            requires_approval=requires_approval,
            policy=policy,
            targets=targets,
        )
        return self.add(tool)

    def add(self, tool: Tool) -> Tool:
        """Add a ready-made ``Tool`` (from another registry, an MCP server, a view)."""
        _check_name(tool.name)
        versions = self._versions.setdefault(tool.name, {})
        if tool.semver in versions:
            raise ValueError(
                f"a tool named {tool.name!r} version {tool.version} is already registered"
            )
        versions[tool.semver] = tool
        return tool

    # Lookup --------------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> Tool:
        """The tool ``name`` at ``version`` (or ``name@version``); latest (or pinned) if none."""
        if version is None and "@" in name:
            name, version = name.split("@", 1)
        versions = self._versions.get(name)
        if not versions:
            raise ToolNotFoundError(self._unknown(name))
        if version is None:
            pinned = self._pins.get(name)
            return versions[pinned if pinned is not None else max(versions)]
        found = versions.get(parse_version(version))
        if found is None:
            have = ", ".join(t.version for _, t in sorted(versions.items()))
            raise ToolNotFoundError(f"tool {name!r} has no version {version}; registered: {have}")
        return found

    def versions(self, name: str) -> list[Tool]:
        """Every registered version of ``name``, oldest first."""
        if name not in self._versions:
            raise ToolNotFoundError(self._unknown(name))
        return [t for _, t in sorted(self._versions[name].items())]

    def tools(self) -> list[Tool]:
        """One tool per name, the version a call would use (pinned, else latest), by name."""
        return [self.get(name) for name in sorted(self._versions)]

    def all_versions(self) -> list[Tool]:
        return [t for name in sorted(self._versions) for t in self.versions(name)]

    def _unknown(self, name: str) -> str:
        return f"no tool named {name!r}; available: {', '.join(sorted(self._versions)) or 'none'}"

    def __contains__(self, name: object) -> bool:
        return name in self._versions

    def __len__(self) -> int:
        return len(self._versions)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools())

    def definitions(self) -> list[ToolDefinition]:
        return [t.definition() for t in self.tools()]

    # Views ---------------------------------------------------------------------------------

    def _view(
        self, tools: Iterable[Tool], pins: Mapping[str, Version] | None = None
    ) -> ToolRegistry:
        view = ToolRegistry.__new__(ToolRegistry)
        view._versions = {}
        view._pins = dict(pins or {})
        view.settings = self.settings
        for tool in tools:
            view.add(tool)
        return view

    def select(self, *refs: str) -> ToolRegistry:
        """Only the named tools; ``name@version`` pins that version (what an agent is given)."""
        chosen: list[Tool] = []
        pins: dict[str, Version] = {}
        for ref in refs:
            tool = self.get(ref)
            chosen.extend(self.versions(tool.name))
            if "@" in ref:
                pins[tool.name] = tool.semver
            elif tool.name in self._pins:
                pins[tool.name] = self._pins[tool.name]
        return self._view(chosen, pins)

    def pin(self, name: str, version: str) -> ToolRegistry:
        """A view where calls to ``name`` use ``version`` instead of the latest."""
        tool = self.get(name, version)
        return self._view(self.all_versions(), {**self._pins, name: tool.semver})

    def filter(self, keep: Callable[[Tool], bool]) -> ToolRegistry:
        """A view with the tools for which ``keep(tool)`` is true (judged per version)."""
        kept = [t for t in self.all_versions() if keep(t)]
        names = {t.name for t in kept}
        pins = {n: v for n, v in self._pins.items() if n in names}
        return self._view(kept, pins)

    def prefix(self, prefix: str) -> ToolRegistry:
        """A view with every name prefixed (to combine toolsets whose names collide)."""
        return self.rename({t.name: prefix + t.name for t in self.tools()})

    def rename(self, names: Mapping[str, str]) -> ToolRegistry:
        """A view with tools renamed (``{"old": "new"}``); others keep their names."""
        for old in names:
            if old not in self._versions:
                raise ToolNotFoundError(self._unknown(old))
        moved = [
            dataclasses.replace(t, name=names.get(t.name, t.name)) for t in self.all_versions()
        ]
        pins = {names.get(n, n): v for n, v in self._pins.items()}
        return self._view(moved, pins)

    def require_approval(
        self, which: Iterable[str] | Callable[[Tool], bool] | None = None
    ) -> ToolRegistry:
        """A view where the chosen tools (all, by default) declare ``requires_approval``.

        ``which`` is tool names or a predicate, e.g. ``lambda t: t.has_side_effects``. The
        registry only declares it; the graph and guard layers ask a human before such a call.
        """
        if which is None:
            chosen: Callable[[Tool], bool] = lambda t: True  # noqa: E731
        elif callable(which):
            chosen = which
        else:
            names = set(which)
            chosen = lambda t: t.name in names  # noqa: E731
        flagged = [
            dataclasses.replace(t, requires_approval=True) if chosen(t) else t
            for t in self.all_versions()
        ]
        return self._view(flagged, self._pins)

    def include(self, *others: ToolRegistry) -> ToolRegistry:
        """A new registry with this one's tools and the others'; a name@version clash raises."""
        view = self._view(self.all_versions(), self._pins)
        for other in others:
            for tool in other.all_versions():
                view.add(tool)
            view._pins.update(other._pins)
        return view

    # Calls ---------------------------------------------------------------------------------

    async def call(self, call: ToolCallPart) -> ToolResult:
        """Validate and run one call; every failure becomes a structured error in the result."""
        attributes = {
            sc.GEN_AI_OPERATION_NAME: sc.OPERATION_EXECUTE_TOOL,
            sc.GEN_AI_TOOL_NAME: call.name,
            sc.GEN_AI_TOOL_CALL_ID: call.id,
        }
        with _tracer.start_as_current_span(
            f"execute_tool {call.name}", attributes=attributes
        ) as span:
            arguments = captured(call.arguments) if capture_enabled() else None
            if arguments is not None:
                span.set_attribute(sc.GEN_AI_TOOL_CALL_ARGUMENTS, arguments)
            try:
                tool = self.get(call.name)
            except ToolNotFoundError as e:
                failure = ToolFailure(
                    kind="unknown_tool",
                    message=e.message,
                    hint="call one of the available tools",
                )
                result = ToolResult(call.id, call.name, error=failure.as_dict())
            else:
                span.set_attribute(sc.KEEL_TOOL_VERSION, tool.version)
                result = await execute(tool, call, self.settings)
            if result.error is not None:
                span.set_attribute(sc.ERROR_TYPE, result.error["type"])
                span.set_status(StatusCode.ERROR, result.error["message"][:200])
            content = captured(result.content()) if capture_enabled() else None
            if content is not None:
                span.set_attribute(sc.GEN_AI_TOOL_CALL_RESULT, content)
            return result
