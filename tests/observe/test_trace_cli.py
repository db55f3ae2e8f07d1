"""``keel trace`` list, show, last, export and stats over a store holding real runs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import DemoRuns, record_demo_runs
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from typer.testing import CliRunner

from keel.cli import app
from keel.observe import setup_tracing, shutdown_tracing


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoRuns]:
    data_dir = tmp_path_factory.mktemp("data")
    store = setup_tracing(data_dir / "traces.db")
    try:
        runs = record_demo_runs(store)
    finally:
        shutdown_tracing()
    return data_dir, runs


def keel(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "--data-dir", str(data_dir)], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_list_filters_by_session_agent_error_and_text(recorded: tuple[Path, DemoRuns]) -> None:
    data_dir, runs = recorded
    code, out, _ = keel(data_dir, "trace", "list")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [runs.failed_trace[:12], runs.ok_trace[:12]]
    assert "$0.000100" in lines[1] and "30 tok" in lines[1]

    code, out, _ = keel(data_dir, "trace", "list", "--errors")
    assert [line.split()[0] for line in out.splitlines()] == [runs.failed_trace[:12]]
    code, out, _ = keel(data_dir, "trace", "list", "--session", runs.session)
    assert [line.split()[0] for line in out.splitlines()] == [runs.ok_trace[:12]]
    code, out, _ = keel(data_dir, "trace", "list", "--agent", "weather-agent")
    assert [line.split()[0] for line in out.splitlines()] == [runs.ok_trace[:12]]
    code, out, _ = keel(data_dir, "trace", "list", "-q", "Division by ZERO")
    assert [line.split()[0] for line in out.splitlines()] == [runs.failed_trace[:12]]
    code, out, err = keel(data_dir, "trace", "list", "--agent", "nobody")
    assert code == 0 and out == "" and "no traces match" in err


def test_show_prints_the_tree_with_tokens_cost_keel_attributes_and_errors(
    recorded: tuple[Path, DemoRuns],
) -> None:
    data_dir, runs = recorded
    code, out, _ = keel(data_dir, "trace", "show", runs.ok_trace[:8])
    assert code == 0
    assert "invoke_agent weather-graph" in out
    assert "node ask" in out and "graph.step=2" in out
    assert "in=10 out=5 tok" in out and "$0.000050" in out
    assert "tool.version=1" in out  # a keel.* attribute, shown generically
    assert "session-42" in out

    code, out, _ = keel(data_dir, "trace", "last")
    assert code == 0
    assert "ZeroDivisionError: division by zero" in out
    assert "model crashed <script>" in out
    code, same, _ = keel(data_dir, "trace", "show", "last")
    assert same.splitlines()[:3] == out.splitlines()[:3]


def test_show_rejects_bad_ids_in_one_line(recorded: tuple[Path, DemoRuns]) -> None:
    data_dir, _ = recorded
    code, _, err = keel(data_dir, "trace", "show", "nothex!")
    assert code == 1
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    code, _, err = keel(data_dir, "trace", "show", "abcdef")
    assert code == 1 and "no trace 'abcdef'" in err


def test_export_json_to_a_file(recorded: tuple[Path, DemoRuns], tmp_path: Path) -> None:
    data_dir, runs = recorded
    target = tmp_path / "run.json"
    code, _, err = keel(data_dir, "trace", "export", runs.ok_trace[:10], "-o", str(target))
    assert code == 0 and "exported 1 trace" in err
    (exported,) = json.loads(target.read_text())["traces"]
    assert exported["trace_id"] == runs.ok_trace
    assert exported["summary"]["conversation_id"] == runs.session
    assert len(exported["spans"]) == 8
    tool = next(s for s in exported["spans"] if s["name"] == "execute_tool lookup")
    assert tool["attributes"]["gen_ai.tool.name"] == "lookup"


def test_export_all_as_otlp_json_parses_as_an_otlp_request(
    recorded: tuple[Path, DemoRuns],
) -> None:
    data_dir, runs = recorded
    code, out, _ = keel(data_dir, "trace", "export", "--all", "--format", "otlp-json")
    assert code == 0
    data = json.loads(out)
    # OTLP/JSON writes ids in hex; the protobuf JSON mapping wants base64 for bytes fields.
    for resource in data["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    request = json_format.ParseDict(data, ExportTraceServiceRequest())
    spans = request.resource_spans[0].scope_spans[0].spans
    assert len(spans) == 12
    assert {s.trace_id.hex() for s in spans} == {runs.ok_trace, runs.failed_trace}
    failed = [s for s in spans if s.status.code == 2]
    assert {s.name for s in failed} == {
        "invoke_agent math-agent",
        "execute_tool divide",
        "chat weather-model",
    }
    chat = next(s for s in spans if s.name == "chat weather-model")
    tokens = {a.key: a.value for a in chat.attributes}["gen_ai.usage.input_tokens"]
    assert tokens.int_value == 10


def test_export_needs_a_run_or_all(recorded: tuple[Path, DemoRuns]) -> None:
    data_dir, runs = recorded
    assert keel(data_dir, "trace", "export")[0] == 2
    assert keel(data_dir, "trace", "export", runs.ok_trace, "--all")[0] == 2
    assert keel(data_dir, "trace", "export", "last", "--format", "xml")[0] == 2


def test_stats_aggregates_the_store(recorded: tuple[Path, DemoRuns]) -> None:
    data_dir, _ = recorded
    code, out, _ = keel(data_dir, "trace", "stats")
    assert code == 0
    assert out.startswith("2 runs (1 with errors), 12 spans, 30 tokens in, 15 out, $0.000150")
    assert "execute_tool" in out and "divide" in out and "weather-model" in out
