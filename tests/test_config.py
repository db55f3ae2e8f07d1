"""Settings come from defaults, keel.toml, KEEL_* variables and overrides, in that order."""

from pathlib import Path

import pytest

from keel.config import load_settings
from keel.errors import ConfigError


def test_precedence_file_then_environment_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "keel.toml"
    config.write_text('data_dir = "/from/file"\n[llm]\nmax_tokens = 100\ntemperature = 0.5\n')
    env = {"KEEL_LLM__MAX_TOKENS": "200", "KEEL_MEMORY__TOP_K": "7"}
    settings = load_settings({"llm": {"temperature": 0.1}}, config_file=config, environ=env)
    assert settings.data_dir == Path("/from/file")
    assert settings.llm.max_tokens == 200
    assert settings.llm.temperature == 0.1
    assert settings.memory.top_k == 7
    assert settings.memory_path == Path("/from/file/memory.db")


def test_keel_config_variable_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "other.toml"
    config.write_text('[llm]\nmodel = "local:/models/x.gguf"\n')
    settings = load_settings(environ={"KEEL_CONFIG": str(config)})
    assert settings.llm.model == "local:/models/x.gguf"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KEEL_LLM__MAX_TOKENS": "lots"}, "invalid setting 'llm.max_tokens'"),
        ({"KEEL_NOPE__X": "1"}, "unknown settings section"),
        ({"KEEL_COLOUR": "red"}, "unknown setting in environment variable KEEL_COLOUR"),
        ({"KEEL_MEMORY__TOP_K": "0"}, "invalid setting 'memory.top_k'"),
    ],
)
def test_bad_values_raise_config_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "keel.toml"
    broken.write_text("[llm\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=broken, environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})


def test_lists_in_the_environment_are_json() -> None:
    settings = load_settings(environ={"KEEL_LLM__FALLBACK": '["local", "local:/m.gguf"]'})
    assert settings.llm.fallback == ["local", "local:/m.gguf"]
