"""``keel memory stats`` and ``keel memory search`` on a real memory file and the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.config import load_settings
from keel.memory.cli import app
from keel.stack import docs_namespace, open_memory

runner = CliRunner()


@pytest.fixture
async def ingested(tmp_path: Path) -> Path:
    """A data dir whose memory holds one ingested folder of two documents."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "venus.md").write_text(
        "# Venus\n\n## Heat\n\nThe surface of Venus is about 465 degrees Celsius.\n"
    )
    (docs / "bread.txt").write_text("Knead the dough for ten minutes, then let it rise.\n")
    memory = open_memory(load_settings({"data_dir": tmp_path / "data"}))
    await memory.ingest(docs)
    await memory.close()
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_stats_lists_namespaces_and_the_cache(ingested: Path) -> None:
    code, stdout, _ = run("stats", "--json", "--data-dir", str(ingested / "data"))
    assert code == 0
    stats = json.loads(stdout)
    assert stats["dimension"] == 384
    assert stats["cached_embeddings"] == 2
    assert stats["namespaces"] == [
        {"namespace": docs_namespace(ingested / "docs"), "records": 2, "documents": 2}
    ]
    code, stdout, _ = run("stats", "--data-dir", str(ingested / "data"))
    assert code == 0 and "2 chunks" in stdout and "2 documents" in stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_search_finds_the_right_chunk(ingested: Path, mode: str) -> None:
    code, stdout, _ = run(
        "search",
        "How hot is Venus?",
        "--mode",
        mode,
        "-k",
        "1",
        "--data-dir",
        str(ingested / "data"),
    )
    assert code == 0, stdout
    assert "venus.md, Venus > Heat" in stdout
    assert "465 degrees" in stdout
    code, stdout, _ = run(
        "search",
        "dough",
        "--json",
        "--docs",
        str(ingested / "docs"),
        "--data-dir",
        str(ingested / "data"),
    )
    assert json.loads(stdout)[0]["metadata"]["source"] == "bread.txt"


def test_stats_without_memory_is_one_line_error(tmp_path: Path) -> None:
    code, _, stderr = run("stats", "--data-dir", str(tmp_path))
    assert code == 1
    path = tmp_path / "memory.db"
    assert stderr.strip().splitlines() == [
        f"error: no memory at {path} yet (ingest documents first: keel ingest PATH)"
    ]


@pytest.mark.slow
def test_search_of_an_unknown_namespace_finds_nothing(ingested: Path) -> None:
    code, stdout, _ = run(
        "search", "Venus", "--namespace", "nope", "--data-dir", str(ingested / "data")
    )
    assert (code, stdout.strip()) == (0, "no hits in namespace nope")


@pytest.mark.slow
def test_several_namespaces_need_a_choice(ingested: Path) -> None:
    other = ingested / "other.md"
    other.write_text("# Other\n\nText.\n")

    async def more() -> None:
        memory = open_memory(load_settings({"data_dir": ingested / "data"}))
        await memory.ingest(other)
        await memory.close()

    import asyncio

    asyncio.run(more())
    code, _, stderr = run("search", "Venus", "--data-dir", str(ingested / "data"))
    assert code == 1
    assert "several namespaces; choose one with --namespace" in stderr
