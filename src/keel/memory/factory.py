"""Builds the configured embedder, vector store and episodic store, importing each backend only
when asked for.

Backends need optional libraries (onnxruntime, usearch, numpy, psycopg, qdrant-client, openai);
keeping their imports inside these functions keeps ``import keel.memory`` fast and lets a missing
extra fail with a clear message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from keel.config import EmbeddingSettings, KeelSettings, MemorySettings
from keel.errors import ConfigError
from keel.memory.base import Embedder, VectorStore
from keel.memory.episodic import EpisodicStore

__all__ = [
    "EMBEDDERS",
    "create_embedder",
    "create_episodic_store",
    "create_vector_store",
    "describe_vector_backend",
]


def _minilm(settings: EmbeddingSettings) -> Embedder:
    from keel.memory.onnx_embedder import MiniLMEmbedder

    return MiniLMEmbedder(threads=settings.threads, batch_size=settings.batch_size)


def _openai(settings: EmbeddingSettings) -> Embedder:
    """``openai:MODEL``: OpenAI's API, or any compatible server when ``base_url`` is set. A
    dimension that is neither configured nor known is probed with one blocking request."""
    from keel.llm.provider import compatible_provider, openai_provider
    from keel.memory.openai_embedder import OpenAIEmbedder

    model = settings.model.partition(":")[2]
    if settings.base_url is None:
        provider = openai_provider()
        if settings.api_key_env:
            provider = dataclasses.replace(provider, api_key_env=settings.api_key_env)
    else:
        provider = compatible_provider(
            settings.base_url,
            name="openai-compatible embeddings",
            api_key_env=settings.api_key_env or "OPENAI_COMPATIBLE_API_KEY",
        )
    provider = dataclasses.replace(provider, timeout=settings.timeout_s)
    embedder = OpenAIEmbedder(
        model, provider, dimension=settings.dimension, batch_size=min(settings.batch_size, 2048)
    )
    embedder.discover_dimension_sync()
    return embedder


EMBEDDERS: dict[str, Callable[[EmbeddingSettings], Embedder]] = {
    "minilm": _minilm,
    "openai": _openai,
}
"""Embedding backends by the name ``EmbeddingSettings.model`` gives (before any ``:``)."""


def create_embedder(settings: EmbeddingSettings) -> Embedder:
    """The embedder named by ``settings.model``; ``ConfigError`` lists the valid names."""
    name, colon, target = settings.model.partition(":")
    factory = EMBEDDERS.get(name)
    if factory is None or (name == "openai" and not target) or (name == "minilm" and colon):
        choices = ", ".join(repr(n if n == "minilm" else f"{n}:MODEL") for n in sorted(EMBEDDERS))
        raise ConfigError(
            f"unknown embedding model {settings.model!r}", hint=f"valid choices: {choices}"
        )
    return factory(settings)


def create_vector_store(
    path: Path, dimension: int, settings: MemorySettings | None = None
) -> VectorStore:
    """The vector store ``settings.backend`` names; without settings (or with ``"sqlite"``) the
    embedded store: one SQLite file at ``path`` with usearch HNSW indexes beside it. Qdrant's
    local mode defaults to the folder ``qdrant`` beside ``path``."""
    backend = "sqlite" if settings is None else settings.backend
    if backend == "pgvector":
        assert settings is not None
        from keel.memory.pgvector_store import PgVectorStore

        dsn = settings.resolve_dsn()
        if dsn is None:
            raise ConfigError(
                "memory.backend = 'pgvector' needs a PostgreSQL connection string",
                hint="set memory.dsn (password in PGPASSWORD) or memory.dsn_env",
            )
        return PgVectorStore(dsn, dimension, table=settings.pg_table, schema=settings.pg_schema)
    if backend == "qdrant":
        assert settings is not None
        from keel.memory.qdrant_store import QdrantVectorStore

        if settings.qdrant_url:
            return QdrantVectorStore(
                dimension,
                url=settings.qdrant_url,
                api_key_env=settings.qdrant_api_key_env,
                collection=settings.qdrant_collection,
            )
        folder = settings.qdrant_path or Path(path).parent / "qdrant"
        return QdrantVectorStore(
            dimension, path=folder.expanduser(), collection=settings.qdrant_collection
        )
    from keel.memory.sqlite_store import HNSWParams, SQLiteVectorStore

    if settings is None:
        return SQLiteVectorStore(path, dimension)
    hnsw = HNSWParams(
        settings.hnsw_connectivity, settings.hnsw_expansion_add, settings.hnsw_expansion_search
    )
    return SQLiteVectorStore(path, dimension, hnsw=hnsw)


def describe_vector_backend(settings: MemorySettings, path: Path) -> str:
    """Which vector store ``settings`` selects and where it is, without credentials."""
    if settings.backend == "pgvector":
        where = "(no dsn configured)"
        try:
            dsn = settings.resolve_dsn()
        except ConfigError:
            dsn, where = None, f"(${settings.dsn_env} is not set)"
        if dsn:
            try:
                from psycopg.conninfo import conninfo_to_dict

                from keel.memory.pg_connection import describe_dsn

                where = describe_dsn(conninfo_to_dict(dsn))
            except Exception:  # a missing driver or an unreadable string: say nothing of it
                where = "(dsn set)"
        return f"PostgreSQL + pgvector {where} table {settings.pg_schema}.{settings.pg_table}"
    if settings.backend == "qdrant":
        if settings.qdrant_url:
            return f"Qdrant server {settings.qdrant_url} ({settings.qdrant_collection})"
        folder = settings.qdrant_path or Path(path).parent / "qdrant"
        return f"Qdrant local mode {folder} ({settings.qdrant_collection})"
    return f"embedded SQLite store {path}"


def create_episodic_store(settings: KeelSettings) -> EpisodicStore:
    """Episodic memory: PostgreSQL when ``memory.dsn`` (or ``dsn_env``) is configured, else the
    SQLite file ``episodes.db`` in the data directory."""
    dsn = settings.memory.resolve_dsn()
    if dsn is not None:
        from keel.memory.episodic_postgres import PostgresEpisodicStore

        return PostgresEpisodicStore(dsn, schema=settings.memory.pg_schema)
    from keel.memory.episodic_sqlite import SQLiteEpisodicStore

    return SQLiteEpisodicStore(settings.data_dir / "episodes.db")
