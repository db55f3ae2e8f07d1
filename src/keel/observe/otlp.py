"""OTLP exporters: spans and metrics to any OpenTelemetry collector, over HTTP or gRPC.

Headers (an API key, say) are never written in configuration: the configuration names the
environment variable that holds each value, and the values are read here, at setup, and handed
to the exporter only. They are never logged, and an error names the variable, never its value.
The exporters come from the ``otlp`` extra and are imported when this module is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from keel.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["OTLPConfig", "otlp_exporters", "resolve_headers"]

Protocol = Literal["http", "grpc"]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True)
class OTLPConfig:
    """Where to send spans and metrics: ``endpoint`` is the collector's base URL
    (``http://127.0.0.1:4318`` for HTTP, ``http://127.0.0.1:4317`` for gRPC); ``headers`` maps a
    header name to the name of the environment variable that holds its value."""

    endpoint: str
    protocol: Protocol = "http"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    metrics: bool = True
    """Also export the metrics of ``keel.observe.metrics``."""

    def __post_init__(self) -> None:
        if self.protocol not in ("http", "grpc"):
            raise ConfigError(
                f"unknown OTLP protocol {self.protocol!r}", hint="use 'http' or 'grpc'"
            )
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"the OTLP endpoint {self.endpoint!r} is not an http(s) URL",
                hint="for example http://127.0.0.1:4318 (HTTP) or http://127.0.0.1:4317 (gRPC)",
            )


def resolve_headers(
    headers: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Header values read from the environment variables ``headers`` names (header -> var)."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for header, variable in headers.items():
        if not _HEADER_NAME.match(header):
            raise ConfigError(f"{header!r} is not a valid HTTP header name")
        if not _ENV_NAME.match(variable):
            raise ConfigError(
                f"OTLP header {header!r}: {variable!r} is not an environment variable name",
                hint="trace.otlp_headers maps a header to the NAME of the variable holding it",
            )
        value = env.get(variable)
        if not value:
            raise ConfigError(
                f"OTLP header {header!r} needs the environment variable {variable}, which is "
                "not set",
                hint=f"export {variable}=... before starting Keel",
            )
        values[header.lower()] = value
    return values


def otlp_exporters(
    config: OTLPConfig, environ: Mapping[str, str] | None = None
) -> tuple[SpanExporter, MetricExporter | None]:
    """A span exporter and (if ``config.metrics``) a metric exporter for ``config``."""
    headers = resolve_headers(config.headers, environ)
    if config.protocol == "grpc":
        return _grpc(config, headers)
    return _http(config, headers)


def _http(
    config: OTLPConfig, headers: dict[str, str]
) -> tuple[SpanExporter, MetricExporter | None]:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise MissingDependencyError(
            "opentelemetry-exporter-otlp-proto-http", "otlp", feature="OTLP over HTTP"
        ) from None
    base = config.endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1/metrics"):
        base = base.removesuffix(suffix)
    spans = OTLPSpanExporter(
        endpoint=f"{base}/v1/traces", headers=headers, timeout=config.timeout_s
    )
    metrics = (
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers, timeout=config.timeout_s)
        if config.metrics
        else None
    )
    return spans, metrics


def _grpc(
    config: OTLPConfig, headers: dict[str, str]
) -> tuple[SpanExporter, MetricExporter | None]:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise MissingDependencyError(
            "opentelemetry-exporter-otlp-proto-grpc", "otlp", feature="OTLP over gRPC"
        ) from None
    parts = urlsplit(config.endpoint)
    target = f"{parts.hostname}:{parts.port or 4317}"
    insecure = parts.scheme == "http"
    spans = OTLPSpanExporter(
        endpoint=target, insecure=insecure, headers=headers, timeout=config.timeout_s
    )
    metrics = (
        OTLPMetricExporter(
            endpoint=target, insecure=insecure, headers=headers, timeout=config.timeout_s
        )
        if config.metrics
        else None
    )
    return spans, metrics
