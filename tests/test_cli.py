"""The ``keel`` command as a user meets it: help that explains, one-line errors, exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

KEEL = [sys.executable, "-m", "keel.cli"]


def keel(
    *args: str, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "KEEL_DATA_DIR": str(data_dir), "COLUMNS": "200", **(env or {})}
    environ.pop("KEEL_CONFIG", None)
    return subprocess.run(
        [*KEEL, *args], capture_output=True, text=True, env=environ, timeout=300, cwd=data_dir
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["ask", "demo", "ingest", "doctor", "trace"]),
        (("ask", "--help"), ["--docs", "--model", "--top-k", "--json", "--quiet", "--data-dir"]),
        (("demo", "--help"), ["--question", "--model"]),
        (("trace", "--help"), ["last", "show", "list"]),
        (("doctor", "--help"), ["--model"]),
    ],
)
def test_help_explains_every_command_and_option(
    args: tuple[str, ...], expected: list[str], tmp_path: Path
) -> None:
    result = keel(*args, "--help", data_dir=tmp_path) if args else keel("--help", data_dir=tmp_path)
    assert result.returncode == 0
    for word in expected:
        assert word in result.stdout


def test_version(tmp_path: Path) -> None:
    result = keel("--version", data_dir=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("keel ")


def test_missing_docs_path(tmp_path: Path) -> None:
    result = keel("ask", "Why?", "--docs", str(tmp_path / "nowhere"), data_dir=tmp_path)
    assert_one_line_error(result, "document path does not exist")


def test_empty_corpus(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.md").write_text("   \n")
    result = keel("ask", "Why?", "--docs", str(empty), data_dir=tmp_path)
    assert_one_line_error(result, "no")


def test_unreadable_file_is_skipped_and_named(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\nText.\n")
    (docs / "bad.md").write_bytes(b"\xff\xfe\x00 not utf-8 \x81")
    result = keel("ingest", str(docs), data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "skipped bad.md: not valid UTF-16 text" in result.stderr
    assert '"files_added": 1' in result.stdout


def test_only_unreadable_files(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bad.md").write_bytes(b"\xff\xfe\x00 not utf-8 \x81")
    result = keel("ask", "Why?", "--docs", str(docs), data_dir=tmp_path)
    assert_one_line_error(result, "bad.md")


def test_model_path_that_does_not_exist(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\nSome text.\n")
    missing = tmp_path / "missing.gguf"
    result = keel(
        "ask", "What?", "--docs", str(docs), "--model", f"local:{missing}", data_dir=tmp_path
    )
    assert_one_line_error(result, f"model file does not exist: {missing}")


def test_unknown_model_provider(tmp_path: Path) -> None:
    docs = tmp_path / "a.md"
    docs.write_text("# A\nSome text.\n")
    result = keel("ask", "What?", "--docs", str(docs), "--model", "nope:x", data_dir=tmp_path)
    assert_one_line_error(result, "unknown model provider 'nope'")


def test_bad_setting_in_environment(tmp_path: Path) -> None:
    result = keel("trace", "last", data_dir=tmp_path, env={"KEEL_LLM__MAX_TOKENS": "lots"})
    assert_one_line_error(result, "invalid setting 'llm.max_tokens'")


def test_trace_last_before_any_run(tmp_path: Path) -> None:
    result = keel("trace", "last", data_dir=tmp_path)
    assert_one_line_error(result, "no traces recorded yet")


def test_empty_question_is_a_usage_error(tmp_path: Path) -> None:
    result = keel("ask", "  ", "--docs", str(tmp_path), data_dir=tmp_path)
    assert result.returncode == 2
    assert "the question is empty" in result.stderr
    assert "Traceback" not in result.stderr
