"""The SSRF guard's connecting half (executors.urlguard has the check): httpx's transport with a network
backend that resolves the name itself, checks every address and connects to a checked one.

Its own module, imported on a webhook's first request: it needs httpcore, which a worker that sends no
request never loads (docs/PERFORMANCE.md, "Worker memory"); the leading underscore keeps the executor
registry's discovery from importing it."""

from __future__ import annotations

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
    """httpx's transport with the guard as its network backend (httpx takes no backend argument: the pool is
    made again around the one it built, keeping its TLS context)."""

    def __init__(self, guard: AddressGuard, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        built: Any = self._pool
        self._pool = httpcore.ConnectionPool(
            ssl_context=built._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(guard),
        )
