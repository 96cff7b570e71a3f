"""What credentials a running worker holds, told without revealing them (`opsq test-auth --workers`).

A worker reads its settings once, when it starts: one started before a token was exported (or rotated) still
calls with none (or the old one) while `opsq test-auth`, which reads the shell's, says OK. The remote-control
command below answers, per platform, whether each credential is set and its fingerprint, with the worker's
host, pid and queues; the CLI compares them with its own (workers.ops.worker_auth). The credential itself
never leaves the worker: not in the reply, not in a log line.

Registered in Celery's global Panel when this module is imported; workers.celery_app imports it, so every
worker of the app answers it (a worker of an older opsqueue answers "unknown command")."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery.worker.control import inspect_command

from executors.registry import EXECUTORS
from workers.settings import Settings, get_settings

CONTROL_COMMAND = "opsq_credentials"


def fingerprint(secret: str) -> str:
    """The first 8 hex digits of the secret's SHA-256.

    Safe enough to send over the broker and print: SHA-256 cannot be run backwards, and 32 bits are far fewer
    than a real token carries (Slack's, Notion's, Google's and Trello's have well over 128 random bits), so
    some 2^96 possible tokens share each fingerprint: it confirms a token only to someone who already holds it.
    What it does give away is whether a *guessable* value is set (anyone can hash "demo-token"): only sandbox
    tokens are like that, and they are not secrets. Two different tokens showing the same fingerprint is a
    one-in-four-billion chance, so "same fingerprint" reads as "same token"."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def _without_userinfo(url: str) -> str:
    """A base URL as it may be shown: any user:password@ left out (a proxy's credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable)"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def held(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per remote platform: where it calls, and each credential (the token, and its executor's secret settings
    such as Trello's api_key) as its fingerprint, or None when unset."""
    out: dict[str, dict[str, Any]] = {}
    for platform, cls in EXECUTORS.items():
        if not cls.remote:
            continue
        own = settings.platform(platform)
        secrets: dict[str, str | None] = {"token": own.token}
        secrets.update({key: own.extra.get(key) for key, setting in cls.extra_settings.items() if setting.secret})
        out[platform] = {"base_url": _without_userinfo(own.base_url),
                         "credentials": {name: None if value is None else fingerprint(value)
                                         for name, value in secrets.items()}}
    return out


def _queues(state: Any) -> list[str]:
    consumer = getattr(state.consumer, "task_consumer", None)
    return sorted(q.name for q in consumer.queues) if consumer is not None else []


@inspect_command()
def opsq_credentials(state: Any, **_: Any) -> dict[str, Any]:
    """Which platform credentials this worker holds (fingerprints only), its host, pid and queues."""
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "queues": _queues(state),
            "platforms": held(get_settings())}
