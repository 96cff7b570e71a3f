"""opsq exporter: Prometheus metrics over HTTP (workers.observability.metrics), like celery-exporter."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from workers.cli.flower_cmd import _is_loopback, _url
from workers.errors import ConfigError

log = logging.getLogger("opsq.exporter")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold the exit


class _QuietHandler(WSGIRequestHandler):
    # A client that connects and sends nothing (no token needed for that) must not hold a thread for good.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def guarded(app: WsgiApp, token: str | None) -> WsgiApp:
    """`app` behind a bearer token (when one is set): Prometheus sends it with `authorization: {credentials:
    ...}` in its scrape config. Compared in constant time; the token is never logged."""
    expected = f"Bearer {token}".encode() if token else None

    def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if expected is not None:
            given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
            if not hmac.compare_digest(given, expected):
                start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                    ("WWW-Authenticate", 'Bearer realm="opsq exporter"')])
                return [b"a bearer token is required (OPSQ_EXPORTER_TOKEN)\n"]
        if environ.get("PATH_INFO") not in ("/metrics", "/metrics/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"opsqueue's Prometheus metrics are at /metrics\n"]
        return app(environ, start_response)

    return wrapped


def metrics_app() -> WsgiApp:
    """The WSGI app serving every layer's metrics (the workflows' and beat's sources added here, by the face)."""
    from prometheus_client import make_wsgi_app

    from beat.health import metric_families as beat_families
    from workers.observability.metrics import registry
    from workflows.reports import metric_families as workflow_families

    app: WsgiApp = make_wsgi_app(registry(more=[("workflows", workflow_families), ("beat", beat_families)]))
    return app


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: OPSQ_EXPORTER_PORT, 9808).")
@click.option("--host", "address", help="Address to bind (default: OPSQ_EXPORTER_ADDRESS, 127.0.0.1).")
def exporter(port: int | None, address: str | None) -> None:
    """Serve Prometheus metrics at http://HOST:PORT/metrics: the workers' counters and durations, the
    guards, the queues and the store, read at each scrape (docs/OBSERVABILITY.md). Binds 127.0.0.1 unless
    OPSQ_EXPORTER_TOKEN is set, which every scrape must then send as a bearer token."""
    from workers.observability.config import observability_settings

    settings = observability_settings()
    token = settings.exporter_token.get_secret_value().strip() if settings.exporter_token else ""
    address = address or settings.exporter_address
    port = port or settings.exporter_port
    if not token and not _is_loopback(address):
        raise ConfigError(f"the exporter serves {address} only with a token: set OPSQ_EXPORTER_TOKEN (scrapes send "
                          "it as a bearer token), or bind 127.0.0.1")
    try:
        server = make_server(address, port, guarded(metrics_app(), token or None), server_class=_Server,
                             handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}:{port}: {exc.strerror or exc}") from None
    click.echo(f"serving Prometheus metrics at {_url(address, port)}metrics"
               f"{' (bearer token required)' if token else ''}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(cli: click.Group) -> None:
    cli.add_command(exporter)
