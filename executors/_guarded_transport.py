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

from executors.urlguard import AddressGuard, IPAddress, WebhookProxy, addresses_of

# The longest proxy answer to CONNECT read (a status line and a few headers).
MAX_PROXY_ANSWER = 16384


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's socket opener, resolving the name itself and connecting to the checked address: directly, or
    with a proxy (OPSQ_WEBHOOK_PROXY) through a CONNECT tunnel to that address. Either way httpcore then speaks
    to the stream it gets as to the destination: TLS with the URL's name (SNI, certificate), then HTTP."""

    def __init__(self, guard: AddressGuard, proxy: WebhookProxy | None = None) -> None:
        self.guard = guard
        self.proxy = proxy
        self.inner = httpcore.SyncBackend()

    def _open(self, host: str, port: int, addresses: list[IPAddress], timeout: float | None,
              local_address: str | None, socket_options: Iterable[Any] | None) -> httpcore.NetworkStream:
        error: Exception | None = None
        for ip in addresses:
            try:
                return self.inner.connect_tcp(str(ip), port, timeout=timeout, local_address=local_address,
                                              socket_options=socket_options)
            except httpcore.ConnectError as exc:  # the next address may answer
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        try:
            addresses = self.guard.resolve(host, port)
        except OSError as exc:  # the name does not resolve: a connection failure, retried like one
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if self.proxy is None:
            return self._open(host, port, addresses, timeout, local_address, socket_options)
        error: Exception | None = None
        for ip in addresses:
            try:
                return self._tunnel(ip, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # the proxy could not reach this address: the next may do
                error = exc
        raise error or httpcore.ConnectError(f"no address for {host}")

    def _tunnel(self, ip: IPAddress, port: int, timeout: float | None, local_address: str | None,
                socket_options: Iterable[Any] | None) -> httpcore.NetworkStream:
        """A CONNECT tunnel through the proxy to `ip` (checked already): the proxy is given the address, never the
        name, so it makes no lookup of its own (no DNS rebinding behind the guard's back). The proxy itself is
        trusted as configured (an operator named it in OPSQ_WEBHOOK_PROXY), not through the destinations'
        allow-list: allow-listing an internal proxy there would also make it, and through it any port of its host,
        a webhook destination."""
        assert self.proxy is not None
        proxy = self.proxy
        try:
            proxy_addresses = addresses_of(proxy.host, proxy.port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve the webhook proxy {proxy.host}: {exc}") from None
        stream = self._open(proxy.host, proxy.port, proxy_addresses, timeout, local_address, socket_options)
        target = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if proxy.authorization:
            head += f"Proxy-Authorization: {proxy.authorization}\r\n"
        try:
            stream.write((head + "\r\n").encode(), timeout=timeout)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = stream.read(4096, timeout=timeout)
                if not chunk or len(answer) > MAX_PROXY_ANSWER:
                    raise httpcore.ConnectError(f"the webhook proxy {proxy.host}:{proxy.port} closed the connection "
                                                f"or answered no HTTP to CONNECT {target}")
                answer += chunk
        except (httpcore.ReadTimeout, httpcore.WriteTimeout):
            stream.close()
            # Nothing reached the destination: a connect timeout, not an ambiguous one (executors.http).
            raise httpcore.ConnectTimeout(f"the webhook proxy {proxy.host}:{proxy.port} did not answer CONNECT "
                                          f"{target} in time") from None
        except (httpcore.ReadError, httpcore.WriteError) as exc:
            stream.close()
            raise httpcore.ConnectError(f"the webhook proxy {proxy.host}:{proxy.port}: {exc}") from None
        except httpcore.ConnectError:
            stream.close()
            raise
        status_line, _, rest = answer.partition(b"\r\n\r\n")
        status_line = status_line.split(b"\r\n", 1)[0]
        fields = status_line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].startswith(b"2") or rest:
            stream.close()
            shown = status_line.decode("latin-1")[:100]
            raise httpcore.ConnectError(f"the webhook proxy {proxy.host}:{proxy.port} refused CONNECT {target}: "
                                        f"{shown}" + (" (and sent data before the tunnel was used)" if rest else ""))
        return stream

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

    def __init__(self, guard: AddressGuard, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None,
                 proxy: WebhookProxy | None = None) -> None:
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
            network_backend=_GuardedBackend(guard, proxy),
        )
