"""The tools lock file: the name, version and schema hash of every tool, committed with a project.

``check_lock`` is what CI runs (``keel tools check``): a tool whose schema changed while its
version did not is a silent change to the contract with every agent that pinned it, so it fails.
``load_registry`` finds the registry the CLI works on from a ``module:attribute`` reference.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import ConfigError, ToolsLockError
from keel.tools.base import Tool, parse_version
from keel.tools.registry import ToolRegistry

__all__ = [
    "DEFAULT_LOCK_FILE",
    "LockReport",
    "check_lock",
    "diff_tools",
    "load_registry",
    "lock_entries",
    "read_lock",
    "write_lock",
]

DEFAULT_LOCK_FILE = "keel-tools.lock"
_FORMAT = 1


def load_registry(spec: str) -> ToolRegistry:
    """Import ``module:attribute`` (the current directory is importable); the attribute is a
    ``ToolRegistry`` or a function that returns one."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            f"registry {spec!r} is not of the form module:attribute",
            hint="e.g. --registry myproject.tools:registry",
        )
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import module {module_name!r}: {e}") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if callable(target) and not isinstance(target, ToolRegistry):
        try:
            inspect.signature(target).bind()
        except (TypeError, ValueError):
            raise ConfigError(f"{spec} needs arguments; point at a ToolRegistry instead") from None
        target = target()
    if not isinstance(target, ToolRegistry):
        raise ConfigError(f"{spec} is a {type(target).__name__}, not a ToolRegistry")
    return target


def lock_entries(registry: ToolRegistry) -> dict[str, dict[str, str]]:
    """``{name: {version: schema_hash}}`` for every version in the registry."""
    entries: dict[str, dict[str, str]] = {}
    for tool in registry.all_versions():
        entries.setdefault(tool.name, {})[tool.version] = tool.schema_hash
    return entries


def read_lock(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolsLockError(
            f"no lock file at {path}", hint="create it with: keel tools lock"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ToolsLockError(f"cannot read lock file {path}: {e}") from None
    tools = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(tools, dict):
        raise ToolsLockError(f"{path} is not a keel tools lock file (no 'tools' table)")
    return {str(n): {str(v): str(h) for v, h in vs.items()} for n, vs in tools.items()}


@dataclass
class LockReport:
    """What ``check_lock`` found; ``problems`` fail the check, ``notes`` do not."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _same_version(versions: dict[str, str], version: str) -> str | None:
    """The lock's spelling of ``version`` ("1" and "1.0.0" are the same version)."""
    wanted = parse_version(version)
    return next((v for v in versions if parse_version(v) == wanted), None)


def check_lock(registry: ToolRegistry, path: Path) -> LockReport:
    """Compare the registry with the lock file at ``path``."""
    locked = read_lock(path)
    report = LockReport()
    current = lock_entries(registry)
    for name, versions in current.items():
        for version, digest in versions.items():
            spelled = _same_version(locked.get(name, {}), version)
            if spelled is None:
                report.problems.append(
                    f"{name}@{version} is not in the lock file (run: keel tools lock)"
                )
            elif locked[name][spelled] != digest:
                report.problems.append(
                    f"{name}@{version}: schema changed without a version bump "
                    f"(locked {locked[name][spelled]}, now {digest}); bump the version"
                )
    for name, versions in locked.items():
        for version in versions:
            if _same_version(current.get(name, {}), version) is None:
                report.notes.append(f"{name}@{version} is locked but no longer registered")
    return report


def write_lock(registry: ToolRegistry, path: Path, *, force: bool = False) -> int:
    """Write the lock file; refuses to re-hash an already locked version unless ``force``.

    Returns the number of tool versions written.
    """
    current = lock_entries(registry)
    if path.exists() and not force:
        changed = [p for p in check_lock(registry, path).problems if "without a version" in p]
        if changed:
            raise ToolsLockError(
                f"refusing to re-lock {len(changed)} changed schema(s): {changed[0]}",
                hint="bump the versions, or pass --force if they were never released",
            )
    body = {"format": _FORMAT, "tools": current}
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return sum(len(v) for v in current.values())


def diff_tools(old: Tool, new: Tool) -> list[str]:
    """What changed in the contract between two tools, one line per change."""
    lines: list[str] = []
    if old.description != new.description:
        lines.append(f"description: {old.description!r} -> {new.description!r}")
    a, b = old.parameters, new.parameters
    a_props, b_props = a.get("properties", {}), b.get("properties", {})
    a_req, b_req = set(a.get("required", [])), set(b.get("required", []))
    for name in sorted(set(a_props) | set(b_props)):
        if name not in b_props:
            lines.append(f"- parameter {name}: removed")
        elif name not in a_props:
            kind = "required" if name in b_req else "optional"
            lines.append(f"+ parameter {name}: added ({kind}) {_short(b_props[name])}")
        else:
            if a_props[name] != b_props[name]:
                lines.append(
                    f"~ parameter {name}: {_short(a_props[name])} -> {_short(b_props[name])}"
                )
            if (name in a_req) != (name in b_req):
                now = "required" if name in b_req else "optional"
                lines.append(f"~ parameter {name}: now {now}")
    rest_a = {k: v for k, v in a.items() if k not in ("properties", "required")}
    rest_b = {k: v for k, v in b.items() if k not in ("properties", "required")}
    if rest_a != rest_b:
        lines.append(f"~ schema: {_short(rest_a)} -> {_short(rest_b)}")
    if old.effects != new.effects:
        lines.append(
            f"~ effects: {sorted(e.value for e in old.effects)} -> "
            f"{sorted(e.value for e in new.effects)}"
        )
    if old.secrets != new.secrets:
        lines.append(f"~ secrets: {list(old.secrets)} -> {list(new.secrets)}")
    return lines


def _short(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True)
