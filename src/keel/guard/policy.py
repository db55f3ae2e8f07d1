"""Policies as data: which tool calls are allowed, asked about or denied, from what they do to
the world (the tool's declared effects) and where their arguments came from (provenance).

A policy is a list of rules, checked in order; the first that matches decides. After your rules
come the built-in defaults (unless ``defaults = false``):

1. ``untrusted-target``: a call that writes or sends outside (or whose effects are undeclared)
   and whose *target* (recipient, URL, account, path) derives from untrusted content is denied;
2. ``reads``: read-only calls are allowed, whatever their arguments;
3. ``trusted-target``: an effect whose target the user or the developer chose is allowed.

Policies load from TOML or JSON (``load_policy``); errors name the file, the line (TOML) and the
key. ``Policy.decide`` is pure, so a policy is testable without a model.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keel.errors import PolicyError
from keel.llm.messages import Provenance

__all__ = [
    "DEFAULT_RULES",
    "CallFacts",
    "Decision",
    "Policy",
    "Rule",
    "ToolOverride",
    "Verdict",
    "load_policy",
    "parse_policy",
]

Decision = Literal["allow", "ask", "deny"]
TrustMatch = Literal["any", "trusted", "untrusted"]
EffectName = Literal["read_only", "writes", "sends_outside", "undeclared"]
EFFECTFUL: tuple[EffectName, ...] = ("writes", "sends_outside", "undeclared")
SEVERITY: dict[str, int] = {"allow": 0, "ask": 1, "deny": 2}
_SOURCE_PATTERN = re.compile(r"^(system|developer|user|tool|document|web|agent|\*)(:.*)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """One rule: when it matches a call, ``decision`` applies and ``reason`` is shown.

    ``tools`` are name patterns (``*`` wildcards); ``effects`` match a tool with any of them;
    ``targets`` and ``arguments`` match the trust of the target arguments / of any argument;
    ``sources`` match the untrusted sources an argument came from, as ``kind:name`` patterns
    (``tool:fetch_url``, ``document:*``). Unset conditions match everything.
    """

    name: str = Field(min_length=1, max_length=80)
    decision: Decision
    tools: tuple[str, ...] = ("*",)
    effects: tuple[EffectName, ...] = ()
    targets: TrustMatch = "any"
    arguments: TrustMatch = "any"
    sources: tuple[str, ...] = ()
    reason: str = ""

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not _SOURCE_PATTERN.match(pattern):
                raise ValueError(
                    f"source pattern {pattern!r} must be KIND or KIND:NAME, KIND one of "
                    "system, developer, user, tool, document, web, agent, *"
                )
        return value

    def matches(self, facts: CallFacts) -> bool:
        if not any(fnmatch.fnmatchcase(facts.tool, p) for p in self.tools):
            return False
        if self.effects and not set(self.effects) & facts.effects:
            return False
        if not _trust_matches(self.targets, facts.untrusted_targets):
            return False
        if not _trust_matches(self.arguments, facts.untrusted_arguments):
            return False
        if self.sources:
            found = facts.untrusted_sources
            names = [str(s) for s in found] + [f"{s.kind}:{s.name}" for s in found]
            names += [s.kind for s in found]
            if not any(fnmatch.fnmatchcase(n, p) for p in self.sources for n in names):
                return False
        return True


def _trust_matches(want: TrustMatch, untrusted: Iterable[str]) -> bool:
    if want == "any":
        return True
    return bool(list(untrusted)) == (want == "untrusted")


class ToolOverride(_Strict):
    """What a policy file declares about a tool it does not own (e.g. one from an MCP server)."""

    targets: tuple[str, ...] | None = None
    """Replaces the tool's declared target parameters."""
    effects: tuple[EffectName, ...] | None = None
    """Replaces the tool's declared effects."""
    trusted_output: bool = False
    """The developer vouches for this tool's output (e.g. the user's own address book)."""


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        name="untrusted-target",
        decision="deny",
        effects=EFFECTFUL,
        targets="untrusted",
        reason="the target of an effect must come from the user or the developer, "
        "not from content the agent read",
    ),
    Rule(name="reads", decision="allow", effects=("read_only",), reason="read-only call"),
    Rule(
        name="trusted-target",
        decision="allow",
        effects=EFFECTFUL,
        reason="an effect on a target the user or the developer chose",
    ),
)


class Policy(_Strict):
    """Rules in order (first match decides), then the built-in ones, then ``default``."""

    version: Literal[1] = 1
    default: Decision = "allow"
    defaults: bool = True
    """Append ``DEFAULT_RULES`` after these rules."""
    tools: dict[str, ToolOverride] = Field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}; rule names must be unique")
            seen.add(rule.name)
        return self

    @property
    def effective_rules(self) -> tuple[Rule, ...]:
        return (*self.rules, *DEFAULT_RULES) if self.defaults else self.rules

    def decide(self, facts: CallFacts) -> Verdict:
        """The verdict of the first matching rule (or ``default``)."""
        for rule in self.effective_rules:
            if rule.matches(facts):
                return Verdict(rule.decision, rule.name, rule.reason, facts)
        return Verdict(self.default, "default", "no rule matched", facts)


@dataclass(frozen=True)
class CallFacts:
    """What a policy sees of one call: the tool, its effects and targets, argument labels."""

    tool: str
    effects: frozenset[str]
    targets: tuple[str, ...]
    labels: Mapping[str, Provenance] = field(default_factory=dict)

    @property
    def untrusted_arguments(self) -> list[str]:
        return [name for name, label in self.labels.items() if not label.trusted]

    @property
    def untrusted_targets(self) -> list[str]:
        return [name for name in self.targets if name in self.untrusted_arguments]

    @property
    def untrusted_sources(self) -> list[Any]:
        found: dict[Any, None] = {}
        for label in self.labels.values():
            found.update(dict.fromkeys(label.untrusted_sources))
        return list(found)


@dataclass(frozen=True)
class Verdict:
    """A decision on one call: what, by which rule, and why."""

    decision: Decision
    rule: str
    reason: str
    facts: CallFacts | None = None
    kind: str = "policy_denied"
    """The ``ToolFailure`` kind a denial is reported with."""

    def explain(self) -> str:
        """One sentence for the model and the trace (source names only, never values)."""
        facts = self.facts
        tool = facts.tool if facts is not None else "this tool"
        verb = {"allow": "allows", "ask": "asks a human about", "deny": "denies"}[self.decision]
        text = f"rule {self.rule!r} {verb} this call to {tool}"
        if facts is not None and facts.untrusted_targets:
            sources = ", ".join(str(s) for s in facts.untrusted_sources[:4])
            text += (
                f": its target {', '.join(facts.untrusted_targets)} derives from untrusted "
                f"content ({sources})"
            )
        return text + (f"; {self.reason}" if self.reason else "")


# Loading -------------------------------------------------------------------------------------


def parse_policy(data: Mapping[str, Any], *, source: str = "policy", text: str = "") -> Policy:
    """Validate a policy from parsed data; errors name ``source``, the line (TOML) and the key."""
    try:
        return Policy.model_validate(dict(data))
    except ValidationError as e:
        error = e.errors()[0]
        loc = tuple(error["loc"])
        where = _dotted(loc)
        line = _toml_line(text, loc) if text else None
        at = f"{source}:{line}" if line else source
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in error and error["type"] not in ("missing",):
            given = error["input"]
            if isinstance(given, str | int | float | bool):
                message += f" (got {given!r})"
        more = f" (and {len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else ""
        raise PolicyError(
            f"{at}: {where}: {message}{more}" if where else f"{at}: {message}{more}",
            hint="see docs/guard.md for the policy file format",
        ) from None


def load_policy(path: str | Path) -> Policy:
    """Read a policy file (``.toml`` or ``.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{path}: no such policy file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"{path}: cannot read the policy file: {e}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PolicyError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        if not isinstance(data, dict):
            raise PolicyError(f"{path}: a policy must be a JSON object")
        return parse_policy(data, source=str(path))
    if suffix != ".toml":
        raise PolicyError(f"{path}: a policy file must end in .toml or .json")
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        match = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = f":{match.group(1)}" if match else ""
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise PolicyError(f"{path}{line}: invalid TOML: {reason}") from None
    return parse_policy(parsed, source=str(path), text=text)


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]" if out == "rules" else f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _toml_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line of ``loc`` in a TOML text: the n-th ``[[rules]]`` table, a ``[tools.X]`` table,
    or a top-level key, then the key inside it when it is written there."""
    lines = text.splitlines()
    table: int | None = None
    rest = list(loc)
    if len(rest) > 1 and rest[0] == "rules" and isinstance(rest[1], int):
        headers = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[\s*rules\s*\]\]", ln)]
        if rest[1] >= len(headers):
            return None
        table, rest = headers[rest[1]], rest[2:]
    elif len(rest) > 1 and rest[0] == "tools":
        name = re.escape(str(rest[1]))
        header = rf'^\s*\[\s*tools\.(?:{name}|"{name}")\s*\]'
        found = [i for i, ln in enumerate(lines) if re.match(header, ln)]
        if not found:
            return None
        table, rest = found[0], rest[2:]
    start = 0 if table is None else table + 1
    end = next((i for i in range(start, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
    if rest and isinstance(rest[0], str):
        key = re.escape(rest[0])
        for i in range(start, end):
            if re.match(rf"^\s*{key}\s*=", lines[i]):
                return i + 1
    return None if table is None else table + 1
