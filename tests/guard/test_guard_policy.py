"""Policy decisions (each default rule, file rules, overrides) and policy file validation, and
``keel policy check``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.errors import PolicyError
from keel.guard import Guard, Policy, Rule, load_policy
from keel.guard.cli import app
from keel.guard.policy import ToolOverride
from keel.guard.provenance import USER, document, tool_output, web
from keel.llm.messages import ToolCallPart
from keel.tools import ToolRegistry

UNTRUSTED = tool_output("read_inbox", "c1")


def _registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(effects="read_only")
    def search(query: str) -> str:
        """Search."""
        return query

    @registry.tool(effects="sends_outside", targets=["to"])
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        return "sent"

    @registry.tool(effects="writes", targets=["path"])
    def delete_file(path: str) -> str:
        """Delete a file."""
        return "deleted"

    @registry.tool()
    def mystery(target: str, note: str) -> str:
        """Effects not declared."""
        return "?"

    return registry


async def _decide(guard: Guard, tool: str, **labels: object) -> tuple[str, str]:
    registry = _registry()
    arguments = {name: "x@y.example" for name in labels}
    call = ToolCallPart(id="c", name=tool, arguments=arguments)
    verdict = await guard.review(call, registry.get(tool), labels)  # type: ignore[arg-type]
    return verdict.decision, verdict.rule


async def test_default_rules() -> None:
    guard = Guard()
    # reads are allowed on any input
    assert await _decide(guard, "search", query=UNTRUSTED) == ("allow", "reads")
    # an effect on a target the user chose is allowed, even with untrusted content in it
    assert await _decide(guard, "send_email", to=USER, body=UNTRUSTED) == (
        "allow",
        "trusted-target",
    )
    # an effect whose target derives from untrusted content is denied
    assert await _decide(guard, "send_email", to=UNTRUSTED, body=USER) == (
        "deny",
        "untrusted-target",
    )
    assert await _decide(guard, "delete_file", path=document("d.md")) == (
        "deny",
        "untrusted-target",
    )
    # undeclared effects: side-effecting, and every argument counts as a target
    assert await _decide(guard, "mystery", target=USER, note=UNTRUSTED) == (
        "deny",
        "untrusted-target",
    )
    assert await _decide(guard, "mystery", target=USER, note=USER) == ("allow", "trusted-target")


async def test_rules_come_first_and_overrides_change_the_facts() -> None:
    policy = Policy(
        rules=(
            Rule(name="no-mail-from-docs", decision="deny", tools=("send_*",),
                 sources=("document:*",)),
            Rule(name="ask-deletes", decision="ask", effects=("writes",), targets="untrusted"),
        ),
        tools={"mystery": ToolOverride(targets=("target",), effects=("sends_outside",))},
    )  # fmt: skip
    guard = Guard(policy)
    assert await _decide(guard, "send_email", to=USER, body=document("d")) == (
        "deny",
        "no-mail-from-docs",
    )
    assert await _decide(guard, "send_email", to=USER, body=UNTRUSTED) == (
        "allow",
        "trusted-target",
    )
    assert await _decide(guard, "delete_file", path=UNTRUSTED) == ("ask", "ask-deletes")
    assert await _decide(guard, "mystery", target=USER, note=UNTRUSTED) == (
        "allow",
        "trusted-target",
    )
    web_rule = Guard(Policy(rules=(Rule(name="no-web", decision="deny", sources=("web",)),)))
    assert await _decide(web_rule, "search", query=web("https://a.example/")) == (
        "deny",
        "no-web",
    )
    assert await _decide(web_rule, "search", query=UNTRUSTED) == ("allow", "reads")
    bare = Guard(Policy(defaults=False, default="deny"))
    assert await _decide(bare, "search", query=USER) == ("deny", "default")


async def test_a_denial_says_why_without_argument_values() -> None:
    guard = Guard()
    call = ToolCallPart(id="c", name="send_email", arguments={"to": "x@evil.example", "body": "b"})
    verdict = await guard.review(call, _registry().get("send_email"), {"to": UNTRUSTED})
    message = guard.denial(call, verdict)
    error = json.loads(message.content)["error"]
    assert message.is_error and error["type"] == "policy_denied"
    assert error["rule"] == "untrusted-target"
    assert "tool:read_inbox#c1" in error["message"] and "x@evil.example" not in error["message"]


async def test_schema_is_checked_before_the_policy() -> None:
    guard = Guard()
    call = ToolCallPart(id="c", name="send_email", arguments={"to": "a@b.example"})
    verdict = await guard.review(call, _registry().get("send_email"), {"to": USER})
    assert (verdict.decision, verdict.rule) == ("deny", "schema")
    assert json.loads(guard.denial(call, verdict).content)["error"]["type"] == "invalid_arguments"


GOOD = """
version = 1
default = "allow"

[tools.mystery]
targets = ["target"]

[[rules]]
name = "ask-payments"
tools = ["transfer_*"]
targets = "untrusted"
decision = "ask"
reason = "a human confirms accounts found in documents"
"""


def test_a_policy_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    policy = load_policy(path)
    assert [r.name for r in policy.rules] == ["ask-payments"]
    json_path = tmp_path / "policy.json"
    json_path.write_text(json.dumps({"rules": [{"name": "r", "decision": "deny"}]}))
    assert load_policy(json_path).rules[0].decision == "deny"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad-decision.toml", GOOD.replace('decision = "ask"', 'decision = "maybe"'),
         r"bad-decision.toml:12: rules[1].decision: Input should be 'allow', 'ask' or 'deny' "
         r"(got 'maybe')"),
        ("unknown-key.toml", GOOD.replace("targets = [", "targetz = ["),
         "unknown-key.toml:6: tools.mystery.targetz: unknown key"),
        ("bad-effect.toml", GOOD.replace('targets = "untrusted"', 'effects = ["explodes"]'),
         "bad-effect.toml:11: rules[1].effects[0]: Input should be"),
        ("bad-source.toml", GOOD.replace('targets = "untrusted"', 'sources = ["email:x"]'),
         "bad-source.toml:11: rules[1].sources: source pattern 'email:x' must be KIND"),
        ("syntax.toml", "rules = [\n", "syntax.toml: invalid TOML"),
        ("twice.toml", GOOD + GOOD[GOOD.index("[[rules]]"):],
         "twice.toml: two rules are named 'ask-payments'"),
        ("policy.yaml", "rules: []", "policy.yaml: a policy file must end in .toml or .json"),
        ("bad.json", '{"rules": [', "bad.json:1: invalid JSON"),
    ],
)  # fmt: skip
def test_policy_file_errors_name_the_place(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert expected in info.value.message
    assert "\n" not in info.value.message


def test_a_missing_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "nope.toml")


def test_policy_check_prints_decisions_per_tool(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD + '\n[tools.write_file]\ntargets = ["path"]\n')
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:] if line.strip()}
    assert "allow (reads)" in lines["read_file"]
    assert "deny (untrusted-target)" in lines["write_file"]
    assert "allow (trusted-target)" in lines["write_file"]
    assert "deny (untrusted-target)" in lines["http_get"]
    assert "rule 'ask-payments' matches none of these tools" in result.output
    assert "[tools.mystery] names a tool that is not in the registry" in result.output


def test_policy_check_fails_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(GOOD.replace('decision = "ask"', 'decision = "maybe"'))
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ")
    assert "rules[1].decision" in result.output and "Traceback" not in result.output


def test_policy_check_reads_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "guard_cli_tools.py").write_text(
        "from keel.tools import ToolRegistry\n"
        "registry = ToolRegistry()\n"
        "@registry.tool(effects='sends_outside', targets=['account'])\n"
        "def transfer_money(account: str, amount: float) -> str:\n"
        "    '''Pay.'''\n"
        "    return 'ok'\n"
    )
    path = tmp_path / "policy.toml"
    path.write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(app, ["check", str(path), "-r", "guard_cli_tools:registry"])
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("transfer_money")]
    assert line.split()[1] == "sends_outside"
    assert "allow (trusted-target)" in line and "ask (ask-payments)" in line
