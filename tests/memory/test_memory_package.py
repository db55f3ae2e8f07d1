"""The package surface: lazy backends, factories and errors for missing extras."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import keel.memory
from keel.config import EmbeddingSettings
from keel.errors import ConfigError, MissingDependencyError
from keel.memory import create_embedder, create_vector_store


def test_importing_keel_memory_loads_no_heavy_library() -> None:
    code = (
        "import sys, keel.memory; "
        "print(sorted(m for m in ('numpy', 'usearch', 'onnxruntime', 'tokenizers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_names_exist() -> None:
    assert keel.memory.__all__ == sorted(set(keel.memory.__all__))
    for name in keel.memory.__all__:
        assert hasattr(keel.memory, name), name


def test_create_embedder_builds_minilm() -> None:
    embedder = create_embedder(EmbeddingSettings(model="minilm", threads=1, batch_size=8))
    assert (embedder.name, embedder.dimension) == ("all-MiniLM-L6-v2-int8", 384)


def test_an_unknown_embedder_lists_the_valid_choices() -> None:
    with pytest.raises(ConfigError, match="'minilm'") as raised:
        create_embedder(EmbeddingSettings(model="word2vec"))
    assert "word2vec" in str(raised.value)


async def test_create_vector_store_opens_the_sqlite_store(tmp_path: Path) -> None:
    from keel.memory.sqlite_store import SQLiteVectorStore

    store = create_vector_store(tmp_path / "sub" / "memory.db", 16)
    assert isinstance(store, SQLiteVectorStore)
    assert await store.count("ns") == 0
    await store.close()


@pytest.mark.parametrize(
    ("module", "blocked", "package", "extra"),
    [
        ("keel.memory.sqlite_store", "usearch.index", "usearch", "ann"),
        ("keel.memory.onnx_embedder", "onnxruntime", "onnxruntime", "embeddings"),
        ("keel.memory.onnx_embedder", "tokenizers", "tokenizers", "embeddings"),
    ],
)
def test_a_missing_library_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, blocked: str, package: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` fail
    for backend in ("keel.memory.sqlite_store", "keel.memory.ann_index", module):
        monkeypatch.delitem(sys.modules, backend, raising=False)  # imported afresh
    with pytest.raises(MissingDependencyError) as raised:
        importlib.import_module(module)
    assert (raised.value.package, raised.value.extra) == (package, extra)
    assert f"keel[{extra}]" in str(raised.value)
