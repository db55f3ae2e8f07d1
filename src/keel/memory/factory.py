"""Builds the configured embedder and vector store, importing each backend only when asked for.

Backends need optional libraries (onnxruntime, faiss, numpy); keeping their imports inside these
functions keeps ``import keel.memory`` fast and lets a missing extra fail with a clear message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from keel.config import EmbeddingSettings
from keel.errors import ConfigError
from keel.memory.base import Embedder, VectorStore

__all__ = ["EMBEDDERS", "create_embedder", "create_vector_store"]


def _minilm(settings: EmbeddingSettings) -> Embedder:
    from keel.memory.onnx_embedder import MiniLMEmbedder

    return MiniLMEmbedder(threads=settings.threads, batch_size=settings.batch_size)


EMBEDDERS: dict[str, Callable[[EmbeddingSettings], Embedder]] = {"minilm": _minilm}
"""Embedding backends by the name ``EmbeddingSettings.model`` gives."""


def create_embedder(settings: EmbeddingSettings) -> Embedder:
    """The embedder named by ``settings.model``; ``ConfigError`` lists the valid names."""
    factory = EMBEDDERS.get(settings.model)
    if factory is None:
        choices = ", ".join(repr(name) for name in sorted(EMBEDDERS))
        raise ConfigError(
            f"unknown embedding model {settings.model!r}", hint=f"valid choices: {choices}"
        )
    return factory(settings)


def create_vector_store(path: Path, dimension: int) -> VectorStore:
    """The embedded vector store: one SQLite file at ``path`` with a faiss index beside it."""
    from keel.memory.sqlite_store import SQLiteVectorStore

    return SQLiteVectorStore(path, dimension)
