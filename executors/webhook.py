"""Webhooks: send JSON to any http(s) URL, optionally with a compensating call for undo.

OPSQ_WEBHOOK_TOKEN is sent (as a Bearer token) only to URLs under the configured webhook base URL
(OPSQ_WEBHOOK_BASE_URL, else OPSQ_PLATFORM_BASE_URL + "/webhook"): a webhook action can name any URL,
and the token must not go to whoever that is. With no base URL configured it is never sent.

Every call carries the action's effect key as an `Idempotency-Key` header (issue 11; the IETF httpapi
idempotency-key draft, as Stripe and others implement it): a receiver that honours it answers a repeat with
the first answer and does not act twice. There is no standard way to *ask* a receiver whether a key was
seen, so webhooks have no lookup: after a lost answer the call is repeated, with the same key.

Every call is signed when a secret is configured for its destination (OPSQ_WEBHOOK_SECRETS, a JSON object of
origin -> secret, else OPSQ_WEBHOOK_SECRET): `X-Opsq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>." + body>`, Stripe's scheme, so a receiver knows the call is ours and recent (docs/ARCHITECTURE.md,
"Webhooks: signature and SSRF guard", has the receiver's recipe). Every connection goes through the SSRF guard
(executors.urlguard): non-public addresses are refused unless OPSQ_WEBHOOK_ALLOW_HOSTS names them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import Field, field_validator

from executors.base import (
    AT_LEAST_ONCE,
    NO_EFFECT,
    ActionParams,
    Effect,
    Executor,
    ExecutorConfig,
    Result,
    Setting,
    example,
)
from executors.errors import ExecutorError, PermanentError
from executors.http import HttpClient
from executors.urlguard import AddressGuard, WebhookProxy

MAX_TEXT_BODY = 2000
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-Opsq-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Opsq-Signature value: the timestamp is signed with the body, so a captured call cannot be
    replayed later than the receiver's tolerance, nor its body swapped."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def origin(url: str) -> str:
    """scheme://host[:port], the port only when not the scheme's default: the key of OPSQ_WEBHOOK_SECRETS."""
    parts = httpx.URL(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port is not None and parts.port != default else ""
    return f"{parts.scheme}://{parts.host.lower()}{port}"


def parse_secrets(raw: str | None) -> dict[str, str]:
    """OPSQ_WEBHOOK_SECRETS -> {origin: secret}. Raises ValueError (without the secrets) when malformed."""
    if not raw:
        return {}
    try:
        given = json.loads(raw)
    except ValueError:
        raise ValueError("OPSQ_WEBHOOK_SECRETS is not JSON (an object of origin -> secret)") from None
    if not isinstance(given, dict) or not all(isinstance(v, str) and v for v in given.values()):
        raise ValueError("OPSQ_WEBHOOK_SECRETS must be a JSON object of origin -> non-empty secret")
    out: dict[str, str] = {}
    for key, secret in given.items():
        # httpx.InvalidURL is no ValueError: left alone it would escape every caller's "malformed" handling.
        try:
            out[origin(key)] = secret
        except httpx.InvalidURL as exc:
            # The key is an origin, never the secret: it may be named.
            raise ValueError(f"OPSQ_WEBHOOK_SECRETS: {key!r} is not a URL origin ({exc})") from None
    return out


def shown_secrets(raw: str) -> str:
    """OPSQ_WEBHOOK_SECRETS as it may be shown: for how many destinations (ValueError when malformed)."""
    count = len(parse_secrets(raw))
    return f"set for {count} destination{'' if count == 1 else 's'}"


def canonical_secrets(raw: str) -> str:
    """OPSQ_WEBHOOK_SECRETS as its fingerprint covers it: one text per {origin: secret} mapping, however spaced,
    ordered or spelt (ValueError when malformed)."""
    return json.dumps(parse_secrets(raw), sort_keys=True, separators=(",", ":"))


def shown_proxy(raw: str) -> str:
    """OPSQ_WEBHOOK_PROXY as it may be shown: host:port and whether a password is set (ValueError when
    malformed: the message the executor would fail every call with)."""
    proxy = WebhookProxy.parse(raw)
    return "empty: no proxy" if proxy is None else proxy.shown()


def encode_body(body: Any) -> bytes:
    """The exact bytes sent, so the signature covers them (as httpx's own json= encodes)."""
    if body is None:
        return b""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


class PostParams(ActionParams):
    """Send JSON to a URL (POST, PUT or PATCH), signed when OPSQ_WEBHOOK_SECRETS has a secret for its origin."""

    model_config = example({"url": "https://hooks.example.com/deploys",
                            "json": {"event": "deployed", "version": "v2"}})

    url: str = Field(min_length=1, max_length=4096)
    # Aliased: a field named `json` would shadow BaseModel.json().
    json_body: Any = Field(None, alias="json")
    headers: dict[str, str] = {}
    compensation_url: str | None = Field(None, max_length=4096)
    compensation_json: Any = None
    method: Literal["POST", "PUT", "PATCH"] = "POST"

    @field_validator("url", "compensation_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _check_url(value)


def token_allowed(url: str, base_url: str | None) -> bool:
    """Whether `url` is under `base_url`: same scheme, host and port, and a path inside the base's path
    (at a segment boundary, no '.' or '..' segments). 'https://h.example/hooks' covers
    'https://h.example/hooks/x', not 'https://h.example/hooksx' nor 'https://h.example.evil/hooks'."""
    if not base_url:
        return False
    try:
        target, base = urlsplit(url), urlsplit(base_url)
        same_origin = (target.scheme.lower(), target.hostname, target.port) == \
            (base.scheme.lower(), base.hostname, base.port)
    except ValueError:
        return False
    if not same_origin or not base.hostname or base.scheme.lower() not in ("http", "https"):
        return False
    if target.username is not None or target.password is not None:
        return False
    segments = unquote(target.path).split("/")
    if "." in segments or ".." in segments:
        return False
    prefix = base.path.rstrip("/")
    return target.path == prefix or target.path.startswith(prefix + "/")


def _redact(exc: ExecutorError, url: str) -> ExecutorError:
    """Webhook URLs often carry their secret in the path (Slack, Discord): keep only the host in errors."""
    parts = httpx.URL(url)
    path = parts.path
    if path and path != "/":
        exc.message = exc.message.replace(path, f"{parts.host}/<redacted>")
        exc.args = (exc.message,)
    return exc


class WebhookExecutor(Executor):
    platform = "webhook"
    actions = {"post": PostParams}
    # Each action names its URL. OPSQ_WEBHOOK_BASE_URL only says where OPSQ_WEBHOOK_TOKEN may be sent,
    # and the token is optional (an action may bring its own Authorization header). No rate limit.
    needs_token = False
    order = 900
    extra_settings = {
        # Signing keys and the proxy's password are chosen by people: shown only as set, counted or host:port
        # (`opsq test-auth --workers` adds their fingerprint under its nonce, so a rotated key is told apart).
        "secret": Setting(secret=True, description="the default key that signs every call (X-Opsq-Signature)",
                          shown=lambda _raw: "set"),
        "secrets": Setting(secret=True, description="a JSON object of origin -> signing key, per destination",
                           shown=shown_secrets, canonical=canonical_secrets),
        "allow_hosts": Setting(description="hostnames and CIDRs the SSRF guard lets through"),
        "max_redirects": Setting(default="0", description="redirects followed (0: none); each hop is checked"),
        # A secret: its URL may carry the proxy's user and password.
        "proxy": Setting(secret=True, description="an http:// proxy every webhook call goes through (a CONNECT "
                                                  "tunnel to the checked address); HTTP(S)_PROXY are ignored",
                         shown=shown_proxy),
    }

    def __init__(self, config: ExecutorConfig, http: HttpClient) -> None:
        super().__init__(config, http)
        extra = config.extra
        try:
            redirects = int(extra.get("max_redirects") or 0)
        except ValueError:
            redirects = 0
        # A bad OPSQ_WEBHOOK_PROXY fails each call (permanently, clearly), not the worker's start; never sent direct.
        self._proxy_error: str | None = None
        try:
            proxy = WebhookProxy.parse(extra.get("proxy"))
        except ValueError as exc:
            proxy, self._proxy_error = None, str(exc)
        self.http = http.guarded(AddressGuard.parse(extra.get("allow_hosts")), max(0, redirects), proxy)
        # A bad OPSQ_WEBHOOK_SECRETS fails each call (permanently, clearly), not the worker's start.
        self._secrets_error: str | None = None
        try:
            self._secrets = parse_secrets(extra.get("secrets"))
        except ValueError as exc:
            self._secrets, self._secrets_error = {}, str(exc)

    def _secret_for(self, url: str) -> str | None:
        if self._secrets_error:
            raise PermanentError(self._secrets_error, platform=self.platform)
        return self._secrets.get(origin(url)) or self.config.extra.get("secret") or None

    def _headers_for(self, url: str, given: dict[str, str]) -> dict[str, str]:
        """The action's headers, plus the token only when `url` is under the webhook base URL. (Not an
        override of Executor._headers: a webhook's credentials depend on the URL it is sent to.)"""
        headers = dict(given)
        if self.config.token and not any(k.lower() == "authorization" for k in headers) \
                and token_allowed(url, self.config.base_url):
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers

    @classmethod
    def guarantee(cls, action: str, extra: Mapping[str, str] | None = None) -> str:
        """At-least-once, as far as opsqueue can tell. After a lost answer the call is repeated (there is no
        lookup to make: no standard lets a sender ask a receiver whether it saw a key), but with the same
        Idempotency-Key: a receiver that honours the header (Stripe-style: the first answer replayed, the
        effect not applied again) makes that exactly-once-effect; any other receiver may act twice."""
        return AT_LEAST_ONCE

    def _send(self, method: str, url: str, body: Any, headers: dict[str, str], effect: Effect = NO_EFFECT
              ) -> Result:
        sent = self._headers_for(url, headers)
        # The action's own Idempotency-Key header, if it names one, wins: its author knows the receiver.
        if effect.key is not None and not any(k.lower() == IDEMPOTENCY_HEADER.lower() for k in sent):
            sent[IDEMPOTENCY_HEADER] = effect.key
        content = encode_body(body)
        if body is not None and not any(k.lower() == "content-type" for k in sent):
            sent["Content-Type"] = "application/json"
        if self._proxy_error:
            raise PermanentError(self._proxy_error, platform=self.platform)
        secret = self._secret_for(url)
        if secret:
            # Ours alone: an action must not pass off its own value as opsqueue's signature.
            sent = {k: v for k, v in sent.items() if k.lower() != SIGNATURE_HEADER.lower()}
            sent[SIGNATURE_HEADER] = sign(secret, content, int(time.time()))
        try:
            response = self.http.request(method, url, platform=self.platform, content=content, headers=sent)
        except ExecutorError as exc:
            raise _redact(exc, url) from None
        try:
            parsed: Any = response.json()
        except ValueError:
            parsed = response.text[:MAX_TEXT_BODY]
        return {"status": response.status_code, "body": parsed}

    def do_post(self, p: PostParams, effect: Effect = NO_EFFECT) -> Result:
        return self._send(p.method, p.url, p.json_body, p.headers, effect)

    def undo_post(self, p: PostParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        if not p.compensation_url:
            return {"compensated": False}
        body = p.compensation_json if p.compensation_json is not None else {"undo": result}
        # The compensation's own effect key (not the post's): a receiver must not answer the undo with the
        # post's stored answer.
        return {"compensated": True, **self._send("POST", p.compensation_url, body, p.headers, effect)}

    def check_auth(self) -> Result:
        return {"ok": True, "note": "webhooks authenticate per URL"}
