"""Fixtures of the memory tests: real embedders, a real SQLite + faiss store, tiny corpora."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from keel.memory.onnx_embedder import MiniLMEmbedder
from keel.memory.sqlite_store import SQLiteVectorStore
from keel.memory.testing import HashingEmbedder


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    """The real local embedding model, loaded once for the whole session."""
    return MiniLMEmbedder(threads=2)


@pytest.fixture
def hashing() -> HashingEmbedder:
    return HashingEmbedder(dimension=128)


@pytest.fixture
async def hashing_store(tmp_path: Path) -> AsyncIterator[SQLiteVectorStore]:
    store = SQLiteVectorStore(tmp_path / "memory.db", 128)
    yield store
    await store.close()
