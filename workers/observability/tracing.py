"""OpenTelemetry traces (issue 13, item 2): off unless OPSQ_TRACING=true, configured by the standard OTEL_*
variables (OTLP over HTTP: OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*).

What is traced: the submit (`opsq.submit`, in the caller), the message's publish and its run in a worker
(OpenTelemetry's Celery instrumentation, which carries the trace context in the message headers, so a
retry, a workflow's next step and a compensation continue the same trace), each guarded attempt
(`opsq.attempt`, with platform, action, attempt and outcome) and the platform's HTTP calls inside it
(the httpx instrumentation). A workflow is one trace: its steps and compensations are sent from within it.

Off, nothing of OpenTelemetry is imported and `span()` is a shared null context: the hot path pays one
attribute check. Secrets: URLs in span attributes are cut to scheme://host (a Trello key and token ride in
the query string), request and response bodies and headers are never recorded, and the Celery
instrumentation records no task arguments.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("opsq.tracing")

_tracer: Any = None
_pid: int | None = None
#: The process that found tracing off (or already set it up): a span asks the environment once per process.
_decided: int | None = None
#: The service name of a process whose first span sets tracing up (a service calling submit_action, the CLI);
#: a worker's pool processes are set up as opsqueue-worker when they start (workers.celery_app).
CLIENT_SERVICE = "opsqueue-client"


def enabled() -> bool:
    return os.environ.get("OPSQ_TRACING", "").strip().lower() in ("1", "true", "yes", "on")


def setup(service_name: str) -> bool:
    """Installs the tracer provider, the OTLP/HTTP exporter and the Celery and httpx instrumentations in this
    process (again after a fork: the exporter's thread does not survive it). True when tracing is on."""
    global _tracer, _pid, _decided
    _decided = os.getpid()
    if not enabled():
        return False
    if _tracer is not None and _pid == os.getpid():
        return True
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # the first call in a process wins; a forked child's own is made here
    if _pid is None:  # instrument once per process tree: the patches survive a fork
        CeleryInstrumentor().instrument(tracer_provider=provider)
        HTTPXClientInstrumentor().instrument(tracer_provider=provider, request_hook=_scrub_request,
                                             response_hook=_scrub_response)
    _tracer = trace.get_tracer("opsqueue")
    _pid = os.getpid()
    return True


def _scrub(span: Any) -> None:
    from workers.redaction import redact_url  # noqa: PLC0415

    attributes = getattr(span, "attributes", None) or {}
    for key in ("http.url", "url.full"):
        value = attributes.get(key)
        if isinstance(value, str):
            span.set_attribute(key, redact_url(value))


def _scrub_request(span: Any, _request: Any) -> None:
    _scrub(span)


def _scrub_response(span: Any, _request: Any, _response: Any) -> None:
    _scrub(span)


def flush(timeout_ms: int = 5000) -> None:
    """Exports what is buffered (a CLI command ends right after its work; a pool process before it exits)."""
    if _tracer is None:
        return
    from opentelemetry import trace  # noqa: PLC0415

    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_ms)


_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()  # reusable: off, a span costs a check and this


def span(name: str, attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Any]:
    """A span around a block when tracing is on; a null context otherwise. The first span of a process that
    was not set up decides (and sets tracing up, as CLIENT_SERVICE, when OPSQ_TRACING is on)."""
    pid = os.getpid()
    if _pid != pid and (_decided == pid or not setup(CLIENT_SERVICE)):
        return _NULL
    return _tracer.start_as_current_span(name, attributes=dict(attributes or {}))  # type: ignore[no-any-return]


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span, hex, for log lines; None when tracing is off or no span."""
    if _tracer is None:
        return None
    from opentelemetry import trace  # noqa: PLC0415

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
