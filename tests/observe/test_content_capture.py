"""Message content in spans: off by default, opt-in, and always redacted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SECRET, record_demo_runs

from keel.config import load_settings
from keel.observe import SQLiteTraceStore, setup_tracing, shutdown_tracing
from keel.observe import semconv as sc
from keel.observe.content import captured, redact, set_capture_content
from keel.observe.tracing import setup_from_settings
from keel.tools.secrets import Redactor

CONTENT_KEYS = {
    sc.GEN_AI_INPUT_MESSAGES,
    sc.GEN_AI_OUTPUT_MESSAGES,
    sc.GEN_AI_TOOL_CALL_ARGUMENTS,
    sc.GEN_AI_TOOL_CALL_RESULT,
}


@pytest.fixture
def capturing(tmp_path: Path) -> Iterator[SQLiteTraceStore]:
    settings = load_settings({"data_dir": tmp_path / "data", "trace": {"capture_content": True}})
    store = setup_from_settings(settings.trace, settings.trace_path)
    assert store is not None
    yield store
    shutdown_tracing()


def _all_bytes(directory: Path) -> bytes:
    """Every byte Keel wrote for the store: the database, its WAL and shared-memory files."""
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


def test_content_is_not_recorded_by_default(traced: SQLiteTraceStore) -> None:
    runs = record_demo_runs(traced)
    for trace_id in (runs.ok_trace, runs.failed_trace):
        for span in traced.trace(trace_id):
            assert not CONTENT_KEYS & set(span.attributes), span.name
    assert b"Weather in Paris" not in _all_bytes(traced.path.parent)


def test_captured_content_is_recorded_and_redacted(capturing: SQLiteTraceStore) -> None:
    runs = record_demo_runs(capturing)
    spans = {s.name: s for s in capturing.trace(runs.ok_trace)}
    chats = [s for s in capturing.trace(runs.ok_trace) if s.name == "chat weather-model"]

    first_input = json.loads(str(chats[0].attributes[sc.GEN_AI_INPUT_MESSAGES]))
    assert first_input == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}
    ]
    first_output = json.loads(str(chats[0].attributes[sc.GEN_AI_OUTPUT_MESSAGES]))
    assert first_output[0]["parts"][0]["name"] == "lookup"
    assert first_output[0]["finish_reason"] == "tool_calls"

    tool = spans["execute_tool lookup"]
    assert json.loads(str(tool.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS])) == {"city": "Paris"}
    # The tool echoed its credential, and the model repeated it: both are scrubbed.
    assert (
        tool.attributes[sc.GEN_AI_TOOL_CALL_RESULT] == "sunny in Paris (key [secret WEATHER_KEY])"
    )
    final = json.loads(str(chats[1].attributes[sc.GEN_AI_OUTPUT_MESSAGES]))
    assert (
        final[0]["parts"][0]["content"] == "It is sunny in Paris. My key is [secret WEATHER_KEY]."
    )

    # Nowhere in the store's files, in any form, whatever span or event it would have been in.
    assert SECRET.encode() not in _all_bytes(capturing.path.parent)
    assert b"Weather in Paris" in _all_bytes(capturing.path.parent)


def test_credential_shapes_are_redacted_without_a_registered_redactor() -> None:
    text = (
        "key sk-proj-abcdefghijklmnop1234 and Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x "
        "aws AKIAABCDEFGHIJKLMNOP password=hunter22 ghp_abcdefghijklmnopqrstuvwxyz012345"
    )
    clean = redact(text)
    for leaked in (
        "sk-proj-abcdefghijklmnop1234",
        "eyJhbGciOiJIUzI1NiJ9",
        "AKIAABCDEFGHIJKLMNOP",
        "hunter22",
        "ghp_abcdefghijklmnopqrstuvwxyz012345",
    ):
        assert leaked not in clean
    assert clean.startswith("key [secret api-key]")


def test_every_live_redactor_applies_and_capture_is_bounded() -> None:
    redactor = Redactor()
    redactor.add("DB_PASSWORD", "correct-horse-battery")
    set_capture_content(True)
    try:
        assert captured({"q": "use correct-horse-battery"}) == '{"q": "use [secret DB_PASSWORD]"}'
        long = captured("x" * 20_000)
        assert long is not None and len(long) < 8_100 and long.endswith("[truncated]")
    finally:
        set_capture_content(False)
    assert captured("anything") is None


def test_shutdown_switches_capture_off(tmp_path: Path) -> None:
    setup_tracing(tmp_path / "traces.db", capture_content=True)
    assert captured("x") == "x"
    shutdown_tracing()
    assert captured("x") is None
