"""The shared HTTP layer: one pooled httpx client per process, explicit timeouts, typed errors."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from executors.errors import AuthError, PermanentError, RateLimitedError, RetryableError
from executors.urlguard import AddressGuard, WebhookProxy

USER_AGENT = "opsqueue/0.1"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return text[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "error", "error_description", "detail"):
            val = body.get(key)
            if isinstance(val, str):
                return val[:200]
            if isinstance(val, dict):
                message = val.get("message")
                if isinstance(message, str):
                    return message[:200]
    return str(body)[:200]


#: Google's way to say 429 with a 403 (Drive, Sheets: `errors[].reason`): the caller is fine, only too fast.
GOOGLE_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


def google_rate_limited(response: httpx.Response) -> bool:
    """A 403 whose Google error envelope names a rate-limit reason (not a permission refused)."""
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("errors") if isinstance(error, dict) else None
    return isinstance(details, list) and any(isinstance(d, dict) and d.get("reason") in GOOGLE_RATE_REASONS
                                             for d in details)


#: A gateway's answer: its upstream may have acted before the gateway gave up on it.
AMBIGUOUS_STATUSES = frozenset({502, 504})


def sent_before_failing(exc: httpx.HTTPError) -> bool:
    """Whether the request was written whole before the failure, so the platform may have acted on it: a read
    timeout, a connection closed or reset while waiting for the answer. Failing to connect, to get a pooled
    connection or to write the request means it never arrived whole: not ambiguous."""
    return isinstance(exc, httpx.ReadTimeout | httpx.ReadError | httpx.RemoteProtocolError)


def raise_for_status(response: httpx.Response, platform: str) -> None:
    status = response.status_code
    if status < 400:
        return
    where = f"{platform} {response.request.method} {response.request.url.path}"
    msg = f"{where} -> HTTP {status}: {_message(response)}"
    if status == 429 or (status == 403 and google_rate_limited(response)):
        raise RateLimitedError(msg, status=status, platform=platform,
                               retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if status in (401, 403):
        raise AuthError(msg, status=status, platform=platform)
    if status >= 500 or status == 408:
        raise RetryableError(msg, status=status, platform=platform, ambiguous=status in AMBIGUOUS_STATUSES,
                             retry_after=parse_retry_after(response.headers.get("Retry-After")))
    raise PermanentError(msg, status=status, platform=platform)


class HttpClient:
    """Wraps one httpx.Client (connection pool) for the whole process; executors share it.

    The httpx.Client is made on the first request, not here: making one loads httpcore and a TLS context
    with every CA certificate (about 2.5 MiB), and a worker process that only runs workflow bookkeeping,
    maintenance or noop actions never sends a request (docs/PERFORMANCE.md, "Worker memory")."""

    def __init__(self, connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0, *,
                 guard: AddressGuard | None = None, max_redirects: int = 0, proxy: WebhookProxy | None = None) -> None:
        self.timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self.guard = guard
        self.proxy = proxy
        self.max_redirects = max_redirects
        self._lock = threading.Lock()
        self._made: httpx.Client | None = None

    def guarded(self, guard: AddressGuard, max_redirects: int = 0, proxy: WebhookProxy | None = None) -> HttpClient:
        """A client of its own for URLs an action names (webhooks): every connection goes through the SSRF
        guard (executors.urlguard), redirects only when asked for (each hop checked). No proxy from the
        environment (HTTP(S)_PROXY: a proxy would resolve the name itself, past the guard, and one set for other
        tools must not carry webhooks by accident); `proxy` (OPSQ_WEBHOOK_PROXY) is used through a CONNECT
        tunnel to the address the guard checked."""
        return HttpClient(self.timeout.connect or 5.0, self.timeout.read or 30.0, guard=guard,
                          max_redirects=max_redirects, proxy=proxy)

    @property
    def _client(self) -> httpx.Client:
        if self._made is None:
            with self._lock:  # executors share this client across a thread pool's threads too
                if self._made is None:
                    limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
                    guarded: dict[str, Any] = {}
                    if self.guard is not None:
                        from executors._guarded_transport import GuardedTransport  # noqa: PLC0415 (httpcore)

                        guarded = {
                        "transport": GuardedTransport(self.guard, limits, proxy=self.proxy), "trust_env": False}
                    self._made = httpx.Client(
                        timeout=self.timeout,
                        headers={"User-Agent": USER_AGENT},
                        limits=limits,
                        follow_redirects=self.max_redirects > 0,
                        max_redirects=self.max_redirects,
                        **guarded,
                    )
        return self._made

    def request(
        self,
        method: str,
        url: str,
        *,
        platform: str,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._client.request(method, url, json=json, content=content, params=params,
                                            headers=headers)
        except httpx.TooManyRedirects:
            raise PermanentError(f"{platform} {method} {httpx.URL(url).path}: more than {self.max_redirects} "
                                 "redirects", platform=platform) from None
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{platform} {method} {httpx.URL(url).path}: timed out ({type(exc).__name__})",
                                 platform=platform, ambiguous=sent_before_failing(exc)) from None
        except httpx.TransportError as exc:
            raise RetryableError(f"{platform} {method} {httpx.URL(url).path}: connection failed ({exc})",
                                 platform=platform, ambiguous=sent_before_failing(exc)) from None
        raise_for_status(response, platform)
        return response

    def json(self, method: str, url: str, *, platform: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, url, platform=platform, **kwargs)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise PermanentError(f"{platform} {method} {httpx.URL(url).path}: response is not JSON",
                                 status=response.status_code, platform=platform) from None
        return body if isinstance(body, dict) else {"data": body}

    def close(self) -> None:
        if self._made is not None:
            self._made.close()
