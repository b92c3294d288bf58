"""The ``tracing`` config section: where OpenTelemetry spans go, if anywhere (off by default).

Pure apart from one look-up: enabling tracing without the ``tracing`` extras installed
(``pip install 'ollama-gateway[tracing]'``) is a config error naming the key, not a crash at the
first request. Nothing from OpenTelemetry is imported here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from policies.schema import Section

__all__ = ["TracingConfig", "parse_tracing"]

_PACKAGES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingConfig:
    """OTLP/HTTP export of one span per request and one per backend attempt."""

    enabled: bool = False
    endpoint: str = "http://localhost:4318/v1/traces"
    service_name: str = "ollama-gateway"
    sample_ratio: float = 1.0  # of the traces started here; a client's sampled flag is honoured (parent-based)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # e.g. a collector's token
    export_interval: float = 5.0  # seconds between batches (BatchSpanProcessor schedule delay)
    timeout: float = 10.0  # seconds for one export request

    def __repr__(self) -> str:  # headers may carry a token
        return f"TracingConfig(enabled={self.enabled!r}, endpoint={self.endpoint!r})"


def _endpoint(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got a {type(value).__name__})")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL, e.g. http://collector:4318/v1/traces")
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials; send them in tracing.headers with ${VAR}")
    return value


def _installed() -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in _PACKAGES)
    except (ImportError, ValueError):  # a parent package missing, or a module blocked in sys.modules
        return False


def parse_tracing(section: Section) -> TracingConfig:
    """The section's settings (absent: tracing off); header values have ``${VAR}`` expanded."""
    enabled = section.bool("enabled", False)
    endpoint = section.custom("endpoint", _endpoint, "http://localhost:4318/v1/traces")
    service_name = section.str("service_name", "ollama-gateway")
    sample_ratio = section.number("sample_ratio", 1.0, minimum=0, maximum=1)
    h = section.mapping("headers")
    headers = {str(key): h.str(str(key)) for key in (h.raw or {})}
    h.done()
    interval = section.number("export_interval", 5.0, minimum=0, exclusive_minimum=True)
    timeout = section.number("timeout", 10.0, minimum=0, exclusive_minimum=True)
    if enabled and not _installed():
        section.problems.add(section.at("enabled"), "needs the OpenTelemetry SDK and its OTLP/HTTP exporter: "
                             "pip install 'ollama-gateway[tracing]'")
    section.done()
    return TracingConfig(enabled=enabled, endpoint=endpoint, service_name=service_name,
                         sample_ratio=float(sample_ratio), headers=MappingProxyType(headers),
                         export_interval=float(interval), timeout=float(timeout))
