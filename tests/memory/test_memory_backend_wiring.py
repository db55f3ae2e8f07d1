"""Configuration picks the vector store, the episodic store and the embedder: the whole path
from ``KEEL_*`` settings through ``open_memory``, ingestion, ``keel memory stats/search`` and
``keel doctor``, on a real PostgreSQL server, Qdrant's local mode and a real local HTTP
embeddings endpoint."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from embeddings_server import EmbeddingsServer, serve_embeddings
from typer.testing import CliRunner

from keel.config import load_settings
from keel.doctor import _check_vectors
from keel.errors import ConfigError
from keel.memory import create_embedder, create_episodic_store, create_vector_store
from keel.memory.episodic_postgres import PostgresEpisodicStore
from keel.memory.episodic_sqlite import SQLiteEpisodicStore
from keel.memory.factory import describe_vector_backend
from keel.memory.openai_embedder import OpenAIEmbedder
from keel.memory.pgvector_store import PgVectorStore
from keel.memory.qdrant_store import QdrantVectorStore
from keel.memory.testing import HashingEmbedder
from keel.stack import docs_namespace, open_memory
from pgserver_fixture import PostgresServer, postgres_server  # noqa: F401 - session fixture

DOCS = {
    "venus.md": "# Venus\n\nThe surface of Venus is about 465 degrees Celsius.\n",
    "bread.txt": "Knead the dough for ten minutes, then let it rise.\n",
}


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:  # noqa: F811 - the imported fixture
    return postgres_server.create_database("keel_wiring", extensions=["vector"])


@pytest.fixture
def embeddings() -> Iterator[EmbeddingsServer]:
    hashing = HashingEmbedder(dimension=48)
    with serve_embeddings(lambda texts: asyncio.run(hashing.embed(texts))) as server:
        yield server


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


def configure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embeddings: EmbeddingsServer, **memory: str
) -> None:
    """Settings through the environment only, as a deployment would give them."""
    monkeypatch.setenv("KEEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KEEL_EMBEDDINGS__MODEL", "openai:hashing-48")
    monkeypatch.setenv("KEEL_EMBEDDINGS__BASE_URL", embeddings.url)
    monkeypatch.setenv("KEEL_EMBEDDINGS__API_KEY_ENV", "WIRING_TEST_EMBEDDINGS_KEY")
    monkeypatch.setenv("WIRING_TEST_EMBEDDINGS_KEY", "sk-wiring-secret")
    monkeypatch.setenv("KEEL_TRACE__ENABLED", "false")
    for key, value in memory.items():
        monkeypatch.setenv(f"KEEL_MEMORY__{key.upper()}", value)


def cli_sync(*args: str) -> tuple[int, str, str]:
    from keel.memory.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


async def cli(*args: str) -> tuple[int, str, str]:
    """The CLI runs its own event loop (``asyncio.run``): give it a thread."""
    return await asyncio.to_thread(cli_sync, *args)


async def ingest_and_search(docs: Path) -> None:
    settings = load_settings()
    memory = open_memory(settings)
    assert isinstance(memory.embedder, OpenAIEmbedder)
    assert memory.embedder.dimension == 48  # probed from the endpoint: nothing configured
    report = await memory.ingest(docs)
    assert report.chunks_total == 2
    await memory.close()

    code, stdout, stderr = await cli("stats", "--json")
    assert code == 0, stderr
    stats = json.loads(stdout)
    assert stats["dimension"] == 48
    assert stats["namespaces"] == [
        {"namespace": docs_namespace(docs), "records": 2, "documents": 2}
    ]
    code, stdout, stderr = await cli("search", "surface of Venus", "--json", "-k", "1")
    assert code == 0, stderr
    assert json.loads(stdout)[0]["metadata"]["source"] == "venus.md"


async def test_pgvector_backend_from_settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    embeddings: EmbeddingsServer,
    docs: Path,
    pg_dsn: str,
) -> None:
    table = f"w_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("WIRING_TEST_PG_DSN", pg_dsn)
    configure(
        monkeypatch, tmp_path, embeddings, backend="pgvector", dsn_env="WIRING_TEST_PG_DSN",
        pg_table=table,
    )  # fmt: skip
    settings = load_settings()
    store = create_vector_store(settings.memory_path, 48, settings.memory)
    assert isinstance(store, PgVectorStore)
    await store.close()
    label = describe_vector_backend(settings.memory, settings.memory_path)
    assert "pgvector" in label and "keel_wiring" in label
    assert pg_dsn.split("password=")[1] not in label
    await ingest_and_search(docs)
    code, stdout, _ = await cli("search", "knead dough", "--mode", "keyword", "--json")
    assert code == 0 and json.loads(stdout)[0]["metadata"]["source"] == "bread.txt"

    check = await _check_vectors(settings)
    assert check.ok and "pgvector" in check.backend, check
    assert set(embeddings.authorizations) == {"Bearer sk-wiring-secret"}


async def test_qdrant_backend_from_settings_searches_by_vector(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embeddings: EmbeddingsServer, docs: Path
) -> None:
    configure(monkeypatch, tmp_path, embeddings, backend="qdrant")
    settings = load_settings()
    store = create_vector_store(settings.memory_path, 48, settings.memory)
    assert isinstance(store, QdrantVectorStore)
    assert store.where == f"Qdrant local mode at {settings.data_dir / 'qdrant'}"
    await store.close()
    await ingest_and_search(docs)  # search's default mode falls back to vector on Qdrant
    code, _, stderr = await cli("search", "Venus", "--mode", "hybrid")
    assert code == 1
    assert "no keyword search" in stderr and "Traceback" not in stderr
    check = await _check_vectors(settings)
    assert check.ok and "Qdrant local mode" in check.backend


async def test_a_misconfigured_backend_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, embeddings: EmbeddingsServer
) -> None:
    configure(monkeypatch, tmp_path, embeddings, backend="pgvector")
    settings = load_settings()
    with pytest.raises(ConfigError, match="needs a PostgreSQL connection string"):
        create_vector_store(settings.memory_path, 48, settings.memory)
    check = await _check_vectors(settings)
    assert not check.ok and "pgvector" in check.backend and "memory.dsn" in check.fix
    monkeypatch.setenv("KEEL_MEMORY__DSN_ENV", "WIRING_TEST_UNSET_DSN")
    monkeypatch.delenv("WIRING_TEST_UNSET_DSN", raising=False)
    with pytest.raises(ConfigError, match="WIRING_TEST_UNSET_DSN, which is not set"):
        load_settings().memory.resolve_dsn()
    monkeypatch.setenv("KEEL_MEMORY__DSN", "host=db password=hunter2")
    with pytest.raises(ConfigError, match="must not hold a password") as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)
    code, _, stderr = await cli("stats")
    assert code == 1 and "hunter2" not in stderr and "password" in stderr


def test_embedder_names_are_checked(embeddings: EmbeddingsServer) -> None:
    settings = load_settings({"embeddings": {"model": "openai:"}}, environ={})
    with pytest.raises(ConfigError, match="unknown embedding model"):
        create_embedder(settings.embeddings)
    settings = load_settings(
        {"embeddings": {"model": "openai:m", "base_url": embeddings.url, "dimension": 48}},
        environ={},
    )
    embedder = create_embedder(settings.embeddings)
    assert embedder.dimension == 48
    assert embeddings.requests == []  # a configured dimension needs no probe request


async def test_episodic_store_follows_the_dsn(pg_dsn: str, tmp_path: Path) -> None:
    plain = load_settings({"data_dir": tmp_path}, environ={})
    store = create_episodic_store(plain)
    assert isinstance(store, SQLiteEpisodicStore)
    assert store.path == tmp_path / "episodes.db"
    await store.close()
    server = load_settings(
        {"data_dir": tmp_path, "memory": {"dsn_env": "WIRING_TEST_PG_DSN"}},
        environ={},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WIRING_TEST_PG_DSN", pg_dsn)
        pg = create_episodic_store(server)
    assert isinstance(pg, PostgresEpisodicStore)
    assert await pg.query(__import__("keel.memory").memory.RunQuery()) == []
    await pg.close()
