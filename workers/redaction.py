"""Removes secrets from anything that is stored, logged or shown (params, results, errors)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authori[sz]ation|cookie|credential|private[_-]?key|signature)",
    re.IGNORECASE,
)
# Keys whose value is a URL that may carry its secret in the path or query (Slack incoming webhooks:
# https://hooks.slack.com/services/T0/B0/SECRET; Discord; signed URLs).
URL_KEYS = frozenset({"url", "compensation_url", "webhook_url"})
_REDACTED_PATH = "/" + REDACTED


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_url(value: str) -> str:
    """An http(s) URL as scheme://host[:port]/[redacted]: its path, query, fragment and any user:password
    removed. A URL with none of those, and anything that is not an http(s) URL, is returned unchanged."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return value
    try:
        port = parts.port
    except ValueError:  # not a number: left out, and the rest still removed
        port = None
    if parts.path in ("", "/") and not parts.query and not parts.fragment and "@" not in parts.netloc:
        return value
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{f':{port}' if port is not None else ''}{_REDACTED_PATH}"


def redact(value: Any, *, urls: bool = False) -> Any:
    """Secret-named keys' values replaced by REDACTED, at any depth.

    `urls=True` also strips the path and query of http(s) URLs under URL_KEYS (see redact_url). Only for
    what is stored or logged and never executed again as it is: an action's stored params, log and event
    kwargs, audit details. Results and workflow step params/outputs keep their URLs (a later step's
    template or a rollback's compensating call uses them). Replays refuse such params (contains_redacted)."""
    if isinstance(value, dict):
        return {k: _redact_item(k, v, urls) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, urls=urls) for v in value]
    return value


def _redact_item(key: Any, value: Any, urls: bool) -> Any:
    if isinstance(key, str):
        if is_secret_key(key):
            return REDACTED
        if urls and key in URL_KEYS and isinstance(value, str):
            return redact_url(value)
    return redact(value, urls=urls)


def contains_redacted(value: Any) -> bool:
    """Whether anything in `value` was redacted (a secret, or a URL cut by redact_url): such params cannot
    be run again as they are."""
    if isinstance(value, str):
        return value == REDACTED or (value.endswith(_REDACTED_PATH) and value.lower().startswith(("http://", "https://")))
    if isinstance(value, dict):
        return any(contains_redacted(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_redacted(v) for v in value)
    return False


def kwargs_repr(kwargs: dict[str, Any]) -> str:
    """What logs, events and Flower show of a message's kwargs (Celery's `kwargsrepr`): secrets and URL
    paths removed."""
    return repr(redact(kwargs, urls=True))
