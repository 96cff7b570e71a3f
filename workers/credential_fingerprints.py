"""What credentials a running worker holds, told without revealing them (`opsq test-auth --workers`).

A worker reads its settings once, when it starts: one started before a token was exported (or rotated) still
calls with none (or the old one) while `opsq test-auth`, which reads the shell's, says OK. The remote-control
command below answers, per platform, whether each credential is set and a fingerprint of it, with the worker's
host, pid and queues; the CLI compares them with its own (workers.ops.worker_auth). The credential itself
never leaves the worker: not in the reply, not in a log line.

A fingerprint is keyed by the request: the CLI sends a fresh random nonce with each question, the worker answers
HMAC-SHA256(nonce, secret) cut to 8 hex digits, and the CLI computes its own with the same nonce. The nonce is
printed nowhere, so a pasted output (a ticket, a chat) cannot be used to test guesses offline, even of a
guessable secret: checking a guess needs the nonce, which means asking a live worker, which needs access to the
broker (whoever has that can read the workers' settings more directly). The same token shows a different
fingerprint in every run; within one run, the same fingerprint on both sides reads as the same token (two
different tokens agree by chance once in four billion). Secrets a person chooses (webhook signing keys, the
proxy's URL with its password: an executor's Setting with `shown`) are fingerprinted the same way, guessable or not:
without the nonce a fingerprint tests no guess, and without a fingerprint a worker holding a rotated signing key would
pass as current. What their `shown` tells (set, for how many destinations, host:port) is sent beside, to read.

Registered in Celery's global Panel when this module is imported; workers.celery_app imports it, so every
worker of the app answers it (a worker of an older opsqueue answers "unknown command")."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery.worker.control import inspect_command

from executors.registry import EXECUTORS
from workers.settings import Settings, get_settings

CONTROL_COMMAND = "opsq_credentials"
#: in every reply: its fingerprints are keyed by the nonce (an older worker's are plain SHA-256, not comparable)
KEYED = "nonce_keyed"
#: hex digits of a nonce: 128 random bits, never reused
NONCE_HEX = 32
#: The nonce's name in the request. kombu logs each request with its arguments at DEBUG; a name with "secret" in
#: it is scrubbed from that line like every `secret=...` pair (workers.redaction), so the nonce is printed nowhere.
NONCE_ARGUMENT = "secret_nonce"


def new_nonce() -> str:
    return secrets.token_hex(NONCE_HEX // 2)


def fingerprint(nonce: str, secret: str) -> str:
    """The first 8 hex digits of HMAC-SHA256 keyed by this request's nonce (see the module's docstring)."""
    return hmac.new(nonce.encode(), secret.encode(), hashlib.sha256).hexdigest()[:8]


def _without_userinfo(url: str) -> str:
    """A base URL as it may be shown: any user:password@ left out (a proxy's credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable)"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _shown(show: Any, value: str) -> str:
    try:
        return str(show(value))
    except ValueError as exc:
        return f"malformed ({exc})"  # the executor's message: it never holds the value


def _compared(canonical: Any, value: str) -> str:
    """The value as fingerprinted: its Setting's canonical form, or the value as set when it has none or is
    malformed (a malformed value is compared as written; `shown` says what is wrong with it)."""
    if canonical is None:
        return value
    try:
        return str(canonical(value))
    except ValueError:
        return value


def held(settings: Settings, nonce: str) -> dict[str, dict[str, Any]]:
    """Per remote platform: where it calls; each credential (the token, and its executor's secret settings such as
    Trello's api_key or the webhook signing keys) as its fingerprint under `nonce`, or None when unset; and for each
    secret a person chooses, also what its Setting's `shown` tells (`shown`: name -> text or None)."""
    if len(nonce) < NONCE_HEX:
        raise ValueError(f"a nonce of at least {NONCE_HEX} hex digits is needed (new_nonce())")
    out: dict[str, dict[str, Any]] = {}
    for platform, cls in EXECUTORS.items():
        if not cls.remote:
            continue
        own = settings.platform(platform)
        keyed: dict[str, str | None] = {"token": own.token}
        shown: dict[str, str | None] = {}
        for key, setting in cls.extra_settings.items():
            if not setting.secret:
                continue
            value = own.extra.get(key)
            keyed[key] = None if value is None else _compared(setting.canonical, value)
            if setting.shown is not None:
                shown[key] = None if value is None else _shown(setting.shown, value)
        out[platform] = {"base_url": _without_userinfo(own.base_url),
                         "credentials": {name: None if value is None else fingerprint(nonce, value)
                                         for name, value in keyed.items()},
                         "shown": shown}
    return out


def _queues(state: Any) -> list[str]:
    consumer = getattr(state.consumer, "task_consumer", None)
    return sorted(q.name for q in consumer.queues) if consumer is not None else []


@inspect_command(args=[(NONCE_ARGUMENT, str)])
def opsq_credentials(state: Any, secret_nonce: str | None = None, **_: Any) -> dict[str, Any]:
    """Which platform credentials this worker holds (fingerprints under the asker's nonce), its host, pid, queues."""
    nonce = secret_nonce
    if not nonce or len(nonce) < NONCE_HEX:
        # Without a fresh nonce a fingerprint would be the same in every output: testable against guesses.
        return {"error": f"no nonce of {NONCE_HEX} hex digits in the request (an older opsq CLI? upgrade it)"}
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "queues": _queues(state), KEYED: True,
            "platforms": held(get_settings(), nonce)}
