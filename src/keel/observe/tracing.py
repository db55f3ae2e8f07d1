"""Where spans go: the trace store (SQLite or PostgreSQL), OTLP to a collector, or both; metrics.

OpenTelemetry lets a process set its global tracer provider only once. Keel therefore attaches
its processors once: a synchronous one whose exporter is a switch pointed at the trace store, a
batching one whose exporter is a switch pointed at the OTLP exporter, one that files spans under
their conversation, and one that derives metrics from finished spans. Each ``setup_tracing`` call
re-points the switches, so calling it again (in tests, or with another path) redirects new spans.
The OpenTelemetry SDK and SQLite are imported on the first call, not with this module.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

from keel.errors import ConfigError
from keel.observe.base import TraceStore
from keel.observe.content import set_capture_content

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.trace import Tracer

    from keel.config import TraceSettings
    from keel.observe.exporter import SwitchingSpanExporter
    from keel.observe.metrics import SpanMetricsProcessor
    from keel.observe.otlp import OTLPConfig
    from keel.observe.store import SQLiteTraceStore

__all__ = [
    "force_flush",
    "get_tracer",
    "setup_from_settings",
    "setup_tracing",
    "shutdown_tracing",
]

_lock = threading.Lock()
_store_switch: SwitchingSpanExporter | None = None
_otlp_switch: SwitchingSpanExporter | None = None
_otlp_batch: BatchSpanProcessor | None = None
_provider: TracerProvider | None = None
_metrics: SpanMetricsProcessor | None = None
_meter_provider: MeterProvider | None = None
_store: TraceStore | None = None


@overload
def setup_tracing(
    path: Path,
    *,
    service_name: str = ...,
    otlp: OTLPConfig | None = ...,
    capture_content: bool | None = ...,
    metric_readers: Sequence[MetricReader] = ...,
) -> SQLiteTraceStore: ...
@overload
def setup_tracing(
    path: TraceStore,
    *,
    service_name: str = ...,
    otlp: OTLPConfig | None = ...,
    capture_content: bool | None = ...,
    metric_readers: Sequence[MetricReader] = ...,
) -> TraceStore: ...
@overload
def setup_tracing(
    path: None,
    *,
    service_name: str = ...,
    otlp: OTLPConfig | None = ...,
    capture_content: bool | None = ...,
    metric_readers: Sequence[MetricReader] = ...,
) -> None: ...
def setup_tracing(
    path: Path | TraceStore | None,
    *,
    service_name: str = "keel",
    otlp: OTLPConfig | None = None,
    capture_content: bool | None = None,
    metric_readers: Sequence[MetricReader] = (),
) -> TraceStore | None:
    """Record every span of this process in the SQLite trace store at ``path`` (None: no local
    store) and, with ``otlp``, send spans and metrics to a collector as well; return the store.

    Spans reach the store as they end (synchronously), so a run that crashes keeps every span
    that finished; OTLP export is batched in the background. Metrics (``keel.observe.metrics``)
    go to ``metric_readers`` (an ``InMemoryMetricReader`` reads them in-process) and to the
    collector. ``capture_content`` switches message content capture on or off (None: unchanged).

    If no global tracer provider is set, Keel sets one whose resource is named ``service_name``;
    if an SDK provider is already set, Keel adds its processors to it. Calling this again with
    the same path returns the same open store; with another path, new spans go to the new file
    and the previous store stays open for reading (close it when done). Each call replaces the
    OTLP and metrics configuration of the previous one. ``path`` may also be an open
    ``TraceStore`` (such as a ``PostgresTraceStore``), which tracing then owns and closes.
    """
    from keel.observe.exporter import SQLiteSpanExporter
    from keel.observe.store import SQLiteTraceStore

    global _store
    span_exporter = None
    metric_exporter = None
    if otlp is not None:
        from keel.observe.otlp import otlp_exporters

        span_exporter, metric_exporter = otlp_exporters(otlp)  # fails before anything changes
    with _lock:
        store_switch, otlp_switch = _install(service_name)
        if capture_content is not None:
            set_capture_content(capture_content)
        _replace_otlp(otlp_switch, span_exporter)
        _replace_metrics(service_name, metric_readers, metric_exporter)
        if path is None:
            _close_store(store_switch)
            return None
        if isinstance(path, TraceStore):
            if path is _store:
                return path
            store: TraceStore = path
        elif (
            isinstance(_store, SQLiteTraceStore)
            and not _store.closed
            and _same_file(_store.path, Path(path))
        ):
            return _store
        else:
            store = SQLiteTraceStore(path)
        previous = store_switch.switch(SQLiteSpanExporter(store))
        if previous is not None:
            previous.shutdown()
        _store = store
        return store


def setup_from_settings(settings: TraceSettings, path: Path) -> TraceStore | None:
    """``setup_tracing`` as the ``[trace]`` settings say: the PostgreSQL store with ``trace.dsn``,
    else the SQLite store at ``path``, unless ``trace.store`` is off. Returns the store, or None
    when it is off."""
    if not settings.enabled:
        return None
    target: Path | TraceStore | None = path if settings.store else None
    dsn = settings.resolve_dsn() if settings.store else None
    if dsn:
        target = _postgres_store(dsn, settings.pg_schema)
    otlp = None
    if settings.otlp_endpoint:
        from keel.observe.otlp import OTLPConfig

        otlp = OTLPConfig(
            endpoint=settings.otlp_endpoint,
            protocol=settings.otlp_protocol,
            headers=dict(settings.otlp_headers),
        )
    return setup_tracing(
        target,
        service_name=settings.service_name,
        otlp=otlp,
        capture_content=settings.capture_content,
    )


def _postgres_store(dsn: str, schema: str) -> TraceStore:
    """The PostgreSQL store tracing writes to already, if it is this one; else a new one."""
    from keel.observe.postgres import PostgresTraceStore

    with _lock:
        current = _store
    if (
        isinstance(current, PostgresTraceStore)
        and not current.closed
        and current.connects_to(dsn, schema)
    ):
        return current
    return PostgresTraceStore(dsn, schema=schema)


def force_flush(timeout_millis: int = 10_000) -> bool:
    """Export spans and metrics still waiting in batches (OTLP) now; True when all went out."""
    with _lock:
        batch, meters = _otlp_batch, _meter_provider
    ok = True
    if batch is not None:
        ok = batch.force_flush(timeout_millis) and ok
    if meters is not None:
        ok = meters.force_flush(timeout_millis) and ok
    return ok


def shutdown_tracing() -> None:
    """Stop recording spans and metrics, flush what OTLP still holds, and close the store that
    ``setup_tracing`` returned last.

    Spans that end later are dropped until ``setup_tracing`` is called again. Safe to call when
    tracing was never set up. Content capture is switched off.
    """
    with _lock:
        if _store_switch is not None:
            _close_store(_store_switch)
        if _otlp_switch is not None:
            _replace_otlp(_otlp_switch, None)
        _replace_metrics("keel", (), None)
        set_capture_content(False)


def get_tracer(name: str) -> Tracer:
    """A tracer from the global provider; spans it makes are recorded once tracing is set up."""
    from opentelemetry import trace

    return trace.get_tracer(name)


def _close_store(store_switch: SwitchingSpanExporter) -> None:
    global _store
    previous = store_switch.switch(None)
    if previous is not None:
        previous.shutdown()
    if _store is not None:
        _store.close()
        _store = None


def _replace_otlp(otlp_switch: SwitchingSpanExporter, exporter: SpanExporter | None) -> None:
    """Flush spans queued for the old OTLP exporter, then send later ones to ``exporter``.

    The batching processor is added on first use, so a process without OTLP pays nothing."""
    global _otlp_batch
    if _otlp_batch is not None:
        _otlp_batch.force_flush(5_000)
    elif exporter is not None and _provider is not None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        _otlp_batch = BatchSpanProcessor(otlp_switch, schedule_delay_millis=1_000)
        _provider.add_span_processor(_otlp_batch)
    previous = otlp_switch.switch(exporter)
    if previous is not None:
        previous.shutdown()


def _replace_metrics(
    service_name: str, readers: Sequence[MetricReader], exporter: MetricExporter | None
) -> None:
    """Give the metrics processor a new meter provider with ``readers`` (and a periodic reader
    for ``exporter``), shutting the previous one down (which exports what it still holds)."""
    global _meter_provider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    all_readers = list(readers)
    if exporter is not None:
        all_readers.append(PeriodicExportingMetricReader(exporter))
    previous, _meter_provider = _meter_provider, None
    provider = None
    if all_readers:
        provider = MeterProvider(
            metric_readers=all_readers,
            resource=Resource.create({SERVICE_NAME: service_name}),
            shutdown_on_exit=True,
        )
        _meter_provider = provider
    if _metrics is not None:
        _metrics.use(provider)
    if previous is not None:
        previous.shutdown()


def _install(service_name: str) -> tuple[SwitchingSpanExporter, SwitchingSpanExporter]:
    """Attach Keel's processors to the global SDK tracer provider, setting one if there is none."""
    global _store_switch, _otlp_switch, _provider, _metrics
    if _store_switch is not None and _otlp_switch is not None:
        return _store_switch, _otlp_switch
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from keel.observe.exporter import SwitchingSpanExporter
    from keel.observe.metrics import ConversationSpanProcessor, SpanMetricsProcessor

    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        trace.set_tracer_provider(
            TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        )
        # Read it back: if another thread set a provider first, that one is the global provider.
        provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise ConfigError(
            f"the global OpenTelemetry tracer provider is a {type(provider).__name__}, not an SDK "
            "TracerProvider, so Keel cannot add its trace store to it",
            hint="set an opentelemetry.sdk.trace.TracerProvider, or none, before setup_tracing",
        )
    store_switch = SwitchingSpanExporter()
    otlp_switch = SwitchingSpanExporter()
    metrics = SpanMetricsProcessor()
    # Order matters: the conversation id is stamped before any exporter sees the span.
    provider.add_span_processor(ConversationSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(store_switch))
    provider.add_span_processor(metrics)
    _store_switch, _otlp_switch, _provider, _metrics = store_switch, otlp_switch, provider, metrics
    return store_switch, otlp_switch


def _same_file(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()
