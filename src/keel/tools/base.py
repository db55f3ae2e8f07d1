"""What a tool is, what a call returns, and how a failure is described to the model.

``Tool`` is the contract: name, semantic version, description, argument schema (from type hints),
schema hash, declared effects and the names of the secrets it needs. ``ToolResult`` is one call's
outcome; when the call failed, ``error`` holds a ``ToolFailure`` as a plain dict (``type``,
``message``, ``retryable``, ``hint``) that goes back to the model as JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from keel.llm.messages import ToolDefinition, ToolMessage
from keel.tools.resilience import ToolPolicy

__all__ = ["Effect", "Tool", "ToolFailure", "ToolResult", "parse_version"]

_VERSION = re.compile(r"^(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?$")


def parse_version(version: str) -> tuple[int, int, int]:
    """``"1"``, ``"1.2"`` or ``"1.2.3"`` as a comparable (major, minor, patch) triple."""
    match = _VERSION.match(version.strip())
    if match is None:
        raise ValueError(f"tool version {version!r}: use a semantic version such as '1.2.0'")
    major, minor, patch = match.groups()
    return int(major), int(minor or 0), int(patch or 0)


class Effect(StrEnum):
    """What a call may do to the world; the journal and the guard decide from these."""

    READ_ONLY = "read_only"
    """Reads only: safe to repeat on resume, safe to call on untrusted input."""
    WRITES = "writes"
    """Changes local state (files, databases): not repeated on resume."""
    SENDS_OUTSIDE = "sends_outside"
    """Sends data out of the process (HTTP, email, messages): exfiltration risk, not repeated."""


class ToolFailure(BaseModel, frozen=True):
    """Why a call failed, in words the model (and an orchestrator routing on ``kind``) can use.

    Kinds: ``unknown_tool``, ``invalid_arguments``, ``timeout``, ``tool_error``, ``rate_limited``,
    ``circuit_open``, ``unserialisable_result``, ``secret_unavailable``.
    """

    kind: str
    message: str
    retryable: bool = False
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The wire form kept in ``ToolResult.error``: ``type`` is the kind."""
        out: dict[str, Any] = {"type": self.kind, "message": self.message}
        out["retryable"] = self.retryable
        if self.hint is not None:
            out["hint"] = self.hint
        return out


@dataclass(frozen=True)
class Tool:
    """A registered function, with what a model needs to call it and what other layers read."""

    name: str
    description: str
    version: str
    arguments: type[BaseModel]
    handler: Callable[..., Any]
    examples: tuple[dict[str, Any], ...] = ()
    timeout: float | None = None
    effects: frozenset[Effect] = frozenset()
    """Declared effects; empty means undeclared, which other layers treat as side-effecting."""
    secrets: tuple[str, ...] = ()
    """Names of the secrets the tool needs (values come from a ``SecretProvider`` at call time)."""
    secret_parameters: tuple[tuple[str, str], ...] = ()
    """(parameter, secret name) pairs injected into the handler, hidden from the schema."""
    requires_approval: bool = False
    """A declaration for the graph and guard layers: a human approves each call first."""
    targets: tuple[str, ...] = ()
    """Parameters naming where an effect lands (recipient, URL, account, path); the guard denies
    an effectful call whose target derives from untrusted content. Empty: undeclared."""
    policy: ToolPolicy | None = field(default=None, compare=False, repr=False)
    """The tool's ``ToolPolicy`` (retries, rate limit, breaker, concurrency), shared by views."""

    @property
    def semver(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def ref(self) -> str:
        """``name@version``: how an agent pins this exact tool."""
        return f"{self.name}@{self.version}"

    @property
    def has_side_effects(self) -> bool:
        """True unless the tool declared itself read-only (undeclared counts as side-effecting)."""
        return self.effects != frozenset({Effect.READ_ONLY})

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments (secret parameters are not in it)."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema

    @property
    def schema_hash(self) -> str:
        """A short hash of what the model sees (name, description, schema), version excluded.

        The version is left out on purpose: ``keel tools check`` compares this hash per version,
        so a changed hash under an unchanged version is a contract change without a bump.
        """
        canonical = json.dumps([self.name, self.description, self.parameters], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def definition(self) -> ToolDefinition:
        return ToolDefinition(
            name=self.name,
            description=self.description,
            parameters=self.parameters,
            examples=self.examples,
        )


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call; ``error`` is set (and ``value`` is None) when it failed.

    ``value`` is what the handler returned, except when the result was truncated or had a secret
    redacted: then it is the text the model saw. ``text`` is that text, computed once.
    """

    call_id: str
    name: str
    value: Any = None
    error: dict[str, Any] | None = None
    duration_s: float = 0.0
    text: str | None = None
    attempts: int = 1
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failure(self) -> ToolFailure | None:
        """``error`` as a typed ``ToolFailure`` (None when the call succeeded)."""
        if self.error is None:
            return None
        return ToolFailure(
            kind=str(self.error.get("type", "tool_error")),
            message=str(self.error.get("message", "")),
            retryable=bool(self.error.get("retryable", False)),
            hint=self.error.get("hint"),
        )

    def content(self) -> str:
        """The result as text for the model: the value (JSON where possible) or the error."""
        if self.error is not None:
            return json.dumps({"error": self.error})
        if self.text is not None:
            return self.text
        if isinstance(self.value, str):
            return self.value
        if isinstance(self.value, BaseModel):
            return self.value.model_dump_json()
        try:
            return json.dumps(self.value, default=str)
        except (TypeError, ValueError):
            return str(self.value)

    def to_message(self) -> ToolMessage:
        return ToolMessage(
            tool_call_id=self.call_id, name=self.name, content=self.content(), is_error=not self.ok
        )
