"""`keel tools` commands and the lock file: list, show, diff, lock, check."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.errors import ConfigError, ToolsLockError
from keel.tools.cli import app
from keel.tools.lockfile import check_lock, load_registry, write_lock

V1 = '''
from keel.tools import ToolRegistry

registry = ToolRegistry()

@registry.tool(version="1.0.0", effects="read_only")
def weather(city: str) -> str:
    """Current weather for a city."""
    return city

@registry.tool(name="weather", version="2.0.0", effects="read_only")
def weather2(city: str, unit: str = "C") -> str:
    """Current weather for a city."""
    return city
'''


def make_module(tmp_path: Path, name: str, source: str, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    return f"{name}:registry"


def test_list_show_and_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_module(tmp_path, "tools_v1", V1, monkeypatch)
    runner = CliRunner()
    listed = runner.invoke(app, ["list", "--all", "-r", spec])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == 2 and lines[0].split()[:2] == ["weather", "1.0.0"]
    assert "read_only" in lines[1]

    shown = runner.invoke(app, ["show", "weather@1.0.0", "-r", spec])
    body = json.loads(shown.output)
    assert body["version"] == "1.0.0" and body["effects"] == ["read_only"]
    assert body["parameters"]["required"] == ["city"]

    diffed = runner.invoke(app, ["diff", "weather", "1.0.0", "2.0.0", "-r", spec])
    assert diffed.exit_code == 0
    assert "+ parameter unit: added (optional)" in diffed.output


def test_check_fails_when_a_schema_changes_without_a_bump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_module(tmp_path, "tools_v2", V1, monkeypatch)
    runner = CliRunner()
    locked = runner.invoke(app, ["lock", "-r", spec])
    assert locked.exit_code == 0 and "locked 2 tool version(s)" in locked.output
    lock = json.loads((tmp_path / "keel-tools.lock").read_text())
    assert set(lock["tools"]["weather"]) == {"1.0.0", "2.0.0"}
    assert runner.invoke(app, ["check", "-r", spec]).exit_code == 0

    changed = V1.replace("def weather(city: str)", "def weather(city: str, days: int)")
    spec = make_module(tmp_path, "tools_v3", changed, monkeypatch)
    result = runner.invoke(app, ["check", "-r", spec])
    assert result.exit_code == 1
    assert "weather@1.0.0: schema changed without a version bump" in result.output
    refused = runner.invoke(app, ["lock", "-r", spec])
    assert refused.exit_code == 1 and "refusing to re-lock" in refused.output
    assert runner.invoke(app, ["lock", "--force", "-r", spec]).exit_code == 0
    assert runner.invoke(app, ["check", "-r", spec]).exit_code == 0


def test_check_reports_unlocked_and_removed_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_module(tmp_path, "tools_v4", V1, monkeypatch)
    registry = load_registry(spec)
    lock = tmp_path / "custom.lock"
    write_lock(registry.filter(lambda t: t.version == "1.0.0"), lock)
    report = check_lock(registry, lock)
    assert report.problems == ["weather@2.0.0 is not in the lock file (run: keel tools lock)"]
    report = check_lock(registry.filter(lambda t: t.version == "2.0.0"), lock)
    assert report.notes == ["weather@1.0.0 is locked but no longer registered"]
    # "1" and "1.0.0" are the same version.
    lock.write_text(
        json.dumps({"tools": {"weather": {"1": registry.get("weather@1").schema_hash}}})
    )
    assert check_lock(registry.filter(lambda t: t.version == "1.0.0"), lock).ok


def test_bad_registry_references_and_lock_files_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_module(tmp_path, "tools_v5", V1, monkeypatch)
    with pytest.raises(ConfigError, match="module:attribute"):
        load_registry("tools_v5")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        load_registry("tools_v5:nope")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_mod'"):
        load_registry("no_such_mod:registry")
    with pytest.raises(ConfigError, match="not a ToolRegistry"):
        load_registry("os:sep")
    with pytest.raises(ConfigError, match="needs arguments"):
        load_registry("json:dumps")
    with pytest.raises(ToolsLockError, match="no lock file"):
        check_lock(load_registry(spec), tmp_path / "missing.lock")
    (tmp_path / "bad.lock").write_text("[]")
    with pytest.raises(ToolsLockError, match="not a keel tools lock file"):
        check_lock(load_registry(spec), tmp_path / "bad.lock")
    result = CliRunner().invoke(app, ["show", "nope", "-r", spec])
    assert result.exit_code == 1 and "error: no tool named 'nope'" in result.output
