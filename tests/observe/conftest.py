"""Shared setup for the observe tests: real runs of Keel's layers recorded in a real trace store.

``record_demo_runs`` drives the real graph engine, agent loop, tool registry and instrumented
model (a ``ScriptedModel`` answers, so the runs are deterministic) and returns what it recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel

from keel.graph import END, START, Agent, Graph
from keel.llm import InstrumentedModel
from keel.llm.cost import Price, PriceTable
from keel.llm.testing import ScriptedModel, tool_call
from keel.observe import SQLiteTraceStore, setup_tracing, shutdown_tracing
from keel.observe.conversation import conversation
from keel.tools import Secret, ToolRegistry

SECRET = "s3cr3t-Token-9f8e7d6c"


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[SQLiteTraceStore]:
    store = setup_tracing(tmp_path / "data" / "traces.db")
    yield store
    shutdown_tracing()


@dataclass
class DemoRuns:
    ok_trace: str
    failed_trace: str
    session: str


class Plan(BaseModel):
    question: str
    answer: str = ""


def _registry() -> ToolRegistry:
    registry = ToolRegistry(secrets=_Secrets())

    @registry.tool
    def lookup(city: str, api_key: Annotated[str, Secret("WEATHER_KEY")]) -> str:
        """Look up the weather of a city."""
        # A careless tool that echoes its credential: redaction must catch it.
        return f"sunny in {city} (key {api_key})"

    @registry.tool
    def divide(a: int, b: int) -> float:
        """Divide a by b."""
        return a / b

    return registry


class _Secrets:
    def get(self, name: str) -> str:
        return SECRET


def _model(steps: list[object]) -> InstrumentedModel:
    prices = PriceTable({"weather-model": Price(input=2.0, output=6.0)})
    return InstrumentedModel(
        ScriptedModel(steps, name="weather-model"),  # type: ignore[arg-type]
        provider="scripted",
        prices=prices,
    )


async def _ok_run(session: str) -> str:
    """A graph run (plan -> ask -> finish) whose ``ask`` node runs an agent with a tool."""
    registry = _registry()
    agent = Agent(
        _model(
            [
                tool_call("lookup", city="Paris"),
                f"It is sunny in Paris. My key is {SECRET}.",  # a model leaking a secret
            ]
        ),
        registry,
        name="weather-agent",
    )

    async def ask(state: Plan) -> dict[str, str]:
        result = await agent.run(state.question)
        return {"answer": result.output}

    graph = Graph(Plan, name="weather-graph")
    graph.add_node("plan", lambda s: None)
    graph.add_node("ask", ask)
    graph.add_node("finish", lambda s: None)
    graph.add_edge(START, "plan").add_edge("plan", "ask").add_edge("ask", "finish")
    graph.add_edge("finish", END)
    with conversation(session):
        result = await graph.compile().run({"question": "Weather in Paris?"})
    assert result.state.answer.startswith("It is sunny")
    return result.run_id


async def _failed_run() -> None:
    """An agent whose tool fails (the run goes on), then a model that fails (the run fails)."""
    agent = Agent(
        _model([tool_call("divide", a=1, b=0), RuntimeError("model crashed <script>")]),
        _registry(),
        name="math-agent",
    )
    with pytest.raises(RuntimeError):
        await agent.run("What is 1/0?")


def record_demo_runs(store: SQLiteTraceStore, session: str = "session-42") -> DemoRuns:
    asyncio.run(_ok_run(session))
    ok = store.last_trace_id()
    asyncio.run(_failed_run())
    failed = store.last_trace_id()
    assert ok is not None and failed is not None and ok != failed
    return DemoRuns(ok_trace=ok, failed_trace=failed, session=session)


# -- a real OTLP receiver, on the official protobuf definitions -------------------------------


@dataclass
class Received:
    """What a receiver got: decoded spans (name -> attributes), metric names, request headers."""

    spans: list[tuple[str, dict[str, object], str]]
    metrics: set[str]
    headers: list[dict[str, str]]

    def span_names(self) -> list[str]:
        return [name for name, _, _ in self.spans]


def _value(any_value: object) -> object:
    kind = any_value.WhichOneof("value")  # type: ignore[attr-defined]
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]  # type: ignore[attr-defined]
    return getattr(any_value, kind) if kind else None


def _collect_spans(request: object, into: Received) -> None:
    for resource_spans in request.resource_spans:  # type: ignore[attr-defined]
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = {kv.key: _value(kv.value) for kv in span.attributes}
                into.spans.append((span.name, attributes, span.trace_id.hex()))


def _collect_metrics(request: object, into: Received) -> None:
    for resource_metrics in request.resource_metrics:  # type: ignore[attr-defined]
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                into.metrics.add(metric.name)


@pytest.fixture
def otlp_http() -> Iterator[tuple[str, Received]]:
    """An OTLP/HTTP receiver on 127.0.0.1: POST /v1/traces and /v1/metrics, protobuf bodies."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    received = Received([], set(), [])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.headers.append({k.lower(): v for k, v in self.headers.items()})
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(415)
                self.end_headers()
                return
            if self.path == "/v1/traces":
                trace_request = ExportTraceServiceRequest()
                trace_request.ParseFromString(body)
                _collect_spans(trace_request, received)
                reply = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                metrics_request = ExportMetricsServiceRequest()
                metrics_request.ParseFromString(body)
                _collect_metrics(metrics_request, received)
                reply = ExportMetricsServiceResponse().SerializeToString()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def otlp_grpc() -> Iterator[tuple[str, Received]]:
    """An OTLP/gRPC receiver on 127.0.0.1 implementing TraceService/Export and
    MetricsService/Export."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import (
        metrics_service_pb2,
        metrics_service_pb2_grpc,
    )
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received = Received([], set(), [])

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: object, context: grpc.ServicerContext) -> object:
            received.headers.append({k: v for k, v in context.invocation_metadata()})
            _collect_spans(request, received)
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: object, context: grpc.ServicerContext) -> object:
            _collect_metrics(request, received)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", received
    server.stop(None)
