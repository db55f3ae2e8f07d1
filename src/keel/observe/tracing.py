"""Where spans go: ``setup_tracing`` sends every span of the process to a local trace store.

OpenTelemetry lets a process set its global tracer provider only once. Keel therefore attaches one
synchronous span processor, once, whose exporter is a switch; each ``setup_tracing`` call points
the switch at a store, so calling it again (in tests, or with another path) redirects new spans.
The OpenTelemetry SDK and SQLite are imported on the first call, not with this module.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from keel.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from keel.observe.exporter import SwitchingSpanExporter
    from keel.observe.store import SQLiteTraceStore

__all__ = ["get_tracer", "setup_tracing", "shutdown_tracing"]

_lock = threading.Lock()
_switch: SwitchingSpanExporter | None = None
_store: SQLiteTraceStore | None = None


def setup_tracing(path: Path, *, service_name: str = "keel") -> SQLiteTraceStore:
    """Record every span of this process in the SQLite trace store at ``path``, and return it.

    Spans are written as they end (a ``SimpleSpanProcessor``), so a run that crashes or exits
    keeps every span that finished. If no global tracer provider is set, Keel sets one whose
    resource is named ``service_name``; if an SDK provider is already set (say, one exporting over
    OTLP), Keel adds its processor to it, so spans go to both. Calling this again with the same
    path returns the same open store; with another path, new spans go to the new file and the
    previous store stays open for reading (close it when done).
    """
    from keel.observe.exporter import SQLiteSpanExporter
    from keel.observe.store import SQLiteTraceStore

    global _store
    with _lock:
        switch = _install(service_name)
        if _store is not None and not _store.closed and _same_file(_store.path, Path(path)):
            return _store
        store = SQLiteTraceStore(path)
        previous = switch.switch(SQLiteSpanExporter(store))
        if previous is not None:
            previous.shutdown()
        _store = store
        return store


def shutdown_tracing() -> None:
    """Stop recording spans and close the store that ``setup_tracing`` returned last.

    Spans that end later are dropped until ``setup_tracing`` is called again. Safe to call when
    tracing was never set up.
    """
    global _store
    with _lock:
        if _switch is not None:
            previous = _switch.switch(None)
            if previous is not None:
                previous.shutdown()
        if _store is not None:
            _store.close()
            _store = None


def get_tracer(name: str) -> Tracer:
    """A tracer from the global provider; spans it makes are recorded once tracing is set up."""
    from opentelemetry import trace

    return trace.get_tracer(name)


def _install(service_name: str) -> SwitchingSpanExporter:
    """Attach Keel's processor to the global SDK tracer provider, setting one if there is none."""
    global _switch
    if _switch is not None:
        return _switch
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from keel.observe.exporter import SwitchingSpanExporter

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
    switch = SwitchingSpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(switch))
    _switch = switch
    return switch


def _same_file(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()
