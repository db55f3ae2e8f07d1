"""``keel policy``: validate a guard policy file and show what it decides for each tool.

``keel policy check POLICY_FILE`` prints one line per tool: the decision when every argument is
trusted, when only non-target arguments come from untrusted content, and when a target does.
The tools are those of ``--registry module:attribute`` (as for ``keel tools``) or, without one,
Keel's built-in tools. An invalid file gives one ``error: FILE:LINE: key: problem`` line.
"""

from __future__ import annotations

import fnmatch
import tempfile
from typing import Annotated, Any

import typer

from keel.console import fail_cleanly
from keel.guard.guard import Guard
from keel.guard.policy import Policy, Verdict, load_policy
from keel.guard.provenance import USER, web
from keel.llm.messages import Provenance, ToolCallPart

__all__ = ["app", "policy_table"]

app = typer.Typer(
    help="Check guard policy files (prompt-injection defence).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Check guard policy files (prompt-injection defence)."""


UNTRUSTED = web("https://untrusted.example/")
CASES = ("trusted input", "untrusted data", "untrusted target")


def _builtin_tools() -> list[Any]:
    """Keel's built-in tools that need no service (their workspace is a throwaway folder)."""
    from keel.tools.builtin import calculator_tools, file_tools, http_tools

    with tempfile.TemporaryDirectory(prefix="keel-policy-") as root:
        registry = calculator_tools().include(file_tools(root), http_tools(["example.com"]))
        return registry.tools()


def _verdicts(policy: Policy, tool: Any) -> list[Verdict | None]:
    """The decision for each of ``CASES`` (None when a case cannot happen for this tool)."""
    guard = Guard(policy, screener=None)
    names = list(tool.arguments.model_fields)
    call = ToolCallPart(id="check", name=tool.name, arguments=dict.fromkeys(names, "x"))
    targets = guard.facts(call, tool, {}).targets
    data_args = [n for n in names if n not in targets]
    cases: list[dict[str, Provenance] | None] = [
        dict.fromkeys(names, USER),
        {n: (UNTRUSTED if n in data_args else USER) for n in names} if data_args else None,
        {n: (UNTRUSTED if n in targets else USER) for n in names} if targets else None,
    ]
    if not names:
        cases[1] = None
    return [None if c is None else policy.decide(guard.facts(call, tool, c)) for c in cases]


def policy_table(policy: Policy, tools: list[Any]) -> list[str]:
    """The lines ``keel policy check`` prints for ``tools``."""
    lines = [f"{'tool':<20} {'effects':<16} " + " ".join(f"{c:<26}" for c in CASES).rstrip()]
    guard = Guard(policy, screener=None)
    for tool in tools:
        facts = guard.facts(ToolCallPart(id="c", name=tool.name), tool, {})
        cells = []
        for verdict in _verdicts(policy, tool):
            cells.append("-" if verdict is None else f"{verdict.decision} ({verdict.rule})")
        effects = ",".join(sorted(facts.effects))
        lines.append(f"{tool.name:<20} {effects:<16} " + " ".join(f"{c:<26}" for c in cells))
    return [line.rstrip() for line in lines]


def _notes(policy: Policy, tools: list[Any]) -> list[str]:
    names = [t.name for t in tools]
    notes = []
    for rule in policy.rules:
        if not any(fnmatch.fnmatchcase(n, p) for p in rule.tools for n in names):
            patterns = ", ".join(rule.tools)
            notes.append(f"rule {rule.name!r} matches none of these tools ({patterns})")
    for name, override in policy.tools.items():
        tool = next((t for t in tools if t.name == name), None)
        if tool is None:
            notes.append(f"[tools.{name}] names a tool that is not in the registry")
        elif override.targets:
            unknown = [t for t in override.targets if t not in tool.arguments.model_fields]
            if unknown:
                notes.append(f"[tools.{name}] targets {unknown} are not parameters of {name}")
    return notes


@app.command()
@fail_cleanly
def check(
    policy_file: Annotated[str, typer.Argument(help="The policy file (.toml or .json).")],
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            "-r",
            envvar="KEEL_TOOLS_REGISTRY",
            help="Tools as module:attribute (a ToolRegistry); default: Keel's built-in tools.",
        ),
    ] = None,
) -> None:
    """Validate POLICY_FILE and print what it allows, asks about and denies, per tool."""
    policy = load_policy(policy_file)
    if registry:
        from keel.tools.lockfile import load_registry

        tools = load_registry(registry).tools()
    else:
        tools = _builtin_tools()
    extra = " (+3 built-in)" if policy.defaults else " (built-in rules off)"
    typer.echo(
        f"ok: {policy_file}: {len(policy.rules)} rule(s){extra}, default {policy.default}, "
        f"{len(tools)} tool(s)"
    )
    for line in policy_table(policy, tools):
        typer.echo(line)
    for note in _notes(policy, tools):
        typer.echo(f"note: {note}")
