"""OTLP export to a real receiver (HTTP and gRPC), next to the local store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import Received, record_demo_runs

from keel.config import load_settings
from keel.errors import ConfigError
from keel.observe import semconv as sc
from keel.observe import setup_tracing, shutdown_tracing
from keel.observe.otlp import OTLPConfig, resolve_headers
from keel.observe.tracing import force_flush, setup_from_settings

TOKEN = "otlp-Token-0123456789abcdef"


def _check_received(received: Received, session: str) -> None:
    names = received.span_names()
    assert "invoke_agent weather-graph" in names
    assert "execute_tool lookup" in names
    assert names.count("chat weather-model") == 4  # two in each run
    chat = next(a for n, a, _ in received.spans if n == "chat weather-model")
    assert chat[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert chat[sc.GEN_AI_PROVIDER_NAME] == "scripted"
    assert chat[sc.GEN_AI_REQUEST_MODEL] == "weather-model"
    assert chat[sc.GEN_AI_USAGE_INPUT_TOKENS] == 10
    assert chat[sc.GEN_AI_CONVERSATION_ID] == session
    root = next(a for n, a, _ in received.spans if n == "invoke_agent weather-graph")
    assert root[sc.KEEL_GRAPH_PATH] == ["plan", "ask", "finish"]
    assert {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "keel.cost",
        "keel.tool.duration",
        "keel.errors",
    } <= received.metrics


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_spans_and_metrics_reach_a_collector_and_the_local_store_at_once(
    protocol: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint, received = request.getfixturevalue(f"otlp_{protocol}")
    monkeypatch.setenv("OBSERVE_TEST_OTLP_TOKEN", TOKEN)
    settings = load_settings(
        {
            "data_dir": tmp_path,
            "trace": {
                "otlp_endpoint": endpoint,
                "otlp_protocol": protocol,
                "otlp_headers": {"X-Api-Key": "OBSERVE_TEST_OTLP_TOKEN"},
                "service_name": "otlp-test",
            },
        }
    )
    caplog.set_level(logging.DEBUG)
    store = setup_from_settings(settings.trace, settings.trace_path)
    assert store is not None
    try:
        runs = record_demo_runs(store)
        assert force_flush()
        local = [s.name for s in store.trace(runs.ok_trace)]
    finally:
        shutdown_tracing()

    _check_received(received, runs.session)
    # The same spans, with the same trace ids, went to both places.
    assert runs.ok_trace in {trace_id for _, _, trace_id in received.spans}
    assert "invoke_agent weather-graph" in local
    # The header came from the environment and reached the collector, but no log line has it.
    assert any(h.get("x-api-key") == TOKEN for h in received.headers)
    assert TOKEN not in caplog.text


def test_otlp_only_without_a_local_store(otlp_http: tuple[str, Received], tmp_path: Path) -> None:
    endpoint, received = otlp_http
    settings = load_settings(
        {"data_dir": tmp_path, "trace": {"store": False, "otlp_endpoint": endpoint}}
    )
    try:
        assert setup_from_settings(settings.trace, settings.trace_path) is None
        from opentelemetry import trace

        with trace.get_tracer("t").start_as_current_span("only remote"):
            pass
        assert force_flush()
    finally:
        shutdown_tracing()
    assert received.span_names() == ["only remote"]
    assert not settings.trace_path.exists()


def test_a_missing_header_variable_is_a_config_error_that_names_it() -> None:
    with pytest.raises(ConfigError, match="OBSERVE_TEST_NOT_SET") as caught:
        resolve_headers({"authorization": "OBSERVE_TEST_NOT_SET"}, environ={})
    assert "export OBSERVE_TEST_NOT_SET" in str(caught.value)
    with pytest.raises(ConfigError, match="not an environment variable name"):
        resolve_headers({"authorization": "Bearer abc"}, environ={})


def test_a_bad_header_value_never_appears_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        OTLPConfig(endpoint="localhost:4318")  # no scheme
    assert "http(s) URL" in str(caught.value)
    with pytest.raises(ConfigError, match="unknown OTLP protocol"):
        OTLPConfig(endpoint="http://127.0.0.1:4318", protocol="udp")  # type: ignore[arg-type]
    # A failed setup changes nothing: the previous configuration stays in force.
    store = setup_tracing(tmp_path / "traces.db")
    try:
        with pytest.raises(ConfigError):
            setup_tracing(
                tmp_path / "other.db",
                otlp=OTLPConfig("http://127.0.0.1:9", headers={"a": "OBSERVE_TEST_NOT_SET"}),
            )
        assert not store.closed
    finally:
        shutdown_tracing()
