"""The SSRF guard's connecting half (executors.urlguard has the check): httpx's transport with a network
backend that resolves the name itself, checks every address and connects to a checked one.

Its own module, imported on a webhook's first request: it needs httpcore, which a worker that sends no
request never loads (docs/PERFORMANCE.md, "Worker memory"); the leading underscore keeps the executor
registry's discovery from importing it."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from executors.urlguard import AddressGuard


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's socket opener, resolving the name itself and connecting to the checked address."""

    def __init__(self, guard: AddressGuard) -> None:
        self.guard = guard
        self.inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        error: Exception | None = None
        try:
            addresses = self.guard.resolve(host, port)
        except OSError as exc:  # the name does not resolve: a connection failure, retried like one
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        for ip in addresses:
            try:
                return self.inner.connect_tcp(str(ip), port, timeout=timeout, local_address=local_address,
                                              socket_options=socket_options)
            except httpcore.ConnectError as exc:  # the next address may answer
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook destinations")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the guard as its network backend.

    The TLS context is made with httpx's public `create_ssl_context` (what HTTPTransport makes for itself: certifi's
    CAs, certificates verified, hostnames checked) and given to both httpx and the pool. httpcore connects through
    the guard's backend to a checked address, then starts TLS with the URL's hostname as `server_hostname`: SNI is
    the name, and the certificate is verified against the name, not the address. `ssl_context`: another one (a
    test's CA).

    httpx takes no network backend argument, so the pool HTTPTransport built (`_pool`, the one private name relied
    on) is replaced by one around the guard's backend. Should a release of httpx keep its pool elsewhere, this
    refuses to build rather than send past the guard (tests/integration/test_webhook_tls.py shows the guard in the
    path, SNI and the certificate checked against the name)."""

    def __init__(self, guard: AddressGuard, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=context, limits=limits, trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore.ConnectionPool):
            raise RuntimeError("this httpx release does not keep its connection pool where the webhook SSRF guard "
                               "installs its own (HTTPTransport._pool): refusing to send webhooks unguarded")
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(guard),
        )
