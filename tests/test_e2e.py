"""End to end with the real embedded stack: SmolLM2 via llama.cpp, MiniLM via ONNX, SQLite+faiss.

These run the ``keel`` command as a user would, in a fresh data directory.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).parents[1] / "src" / "keel" / "demo" / "corpus"
QUESTION = "How hot is the surface of Venus, and what is its atmosphere made of?"


def keel(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEL_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("KEEL_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "keel.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=data_dir,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("01-the-sun.md", "03-venus.md", "07-jupiter.md"):
        shutil.copy(CORPUS / name, folder / name)
    return folder


def test_ask_answers_with_citations_to_real_chunks(docs: Path, tmp_path: Path) -> None:
    answer = json.loads(
        keel("ask", QUESTION, "--docs", str(docs), "--json", data_dir=tmp_path).stdout
    )
    assert answer["model_name"] == "SmolLM2-135M-Instruct.Q4_1"
    assert answer["statements"] and answer["answer"].strip()
    assert answer["citations"], "the answer cites nothing"
    assert answer["usage"]["input_tokens"] > 0 and answer["usage"]["output_tokens"] > 0
    numbers = [c["number"] for c in answer["citations"]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert {s["citation"] for s in answer["statements"]} == set(numbers)
    for citation in answer["citations"]:
        source = docs / citation["source"]
        assert source.is_file()
        assert flat(citation["text"]) in flat(source.read_text())
        title = source.read_text().splitlines()[0].removeprefix("# ")
        assert citation["heading"].startswith(title)
    # Venus is what the question is about: retrieval must have found its chapter first.
    assert answer["retrieved"][0]["source"] == "03-venus.md"


def test_reingest_embeds_only_what_changed(docs: Path, tmp_path: Path) -> None:
    first = json.loads(keel("ingest", str(docs), data_dir=tmp_path).stdout)
    assert first["files_added"] == 3 and first["chunks_embedded"] == first["chunks_total"] > 0
    again = json.loads(keel("ingest", str(docs), data_dir=tmp_path).stdout)
    assert again["files_unchanged"] == 3 and again["chunks_embedded"] == 0
    (docs / "07-jupiter.md").write_text("# Jupiter\n\n## Size\n\nJupiter is the largest planet.\n")
    (docs / "01-the-sun.md").unlink()
    changed = json.loads(keel("ingest", str(docs), data_dir=tmp_path).stdout)
    assert changed["files_updated"] == 1 and changed["files_removed"] == 1
    assert changed["chunks_embedded"] == 1


def test_demo_prints_cited_answer_and_trace_summary(tmp_path: Path) -> None:
    output = keel("demo", data_dir=tmp_path).stdout
    assert "SmolLM2-135M-Instruct.Q4_1" in output
    cited = re.findall(r"^  \[(\d+)\] (\S+\.md) § (.+?)  \(chunk (\d+),", output, re.MULTILINE)
    assert len(cited) >= 2, output
    for _, source, heading, _ in cited:
        assert (CORPUS / source).is_file()
        assert heading.split(" > ")[-1] in (CORPUS / source).read_text()
    for line in ("steps", "model calls", "tokens in", "tokens out", "wall time"):
        assert line in output
    tree = keel("trace", "last", data_dir=tmp_path).stdout
    assert "invoke_agent document-qa" in tree
    assert "retrieval docs-" in tree
    assert re.search(r"chat SmolLM2-135M-Instruct\.Q4_1 .* in=\d+ out=\d+ tok", tree)
