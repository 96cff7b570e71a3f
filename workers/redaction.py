"""Removes secrets from anything that is stored, logged or shown (params, results, errors)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError

from executors.registry import PLATFORMS
from workers.settings import get_settings

REDACTED = "[redacted]"
# The one list of words that make a key (or a `key=value` in free text) secret.
_SECRET_WORD = (r"(?:pass(?:word)?|secret|token|api[_-]?key|authori[sz]ation|cookie|credential"
                r"|private[_-]?key|signature)")
_SECRET_KEY = re.compile(_SECRET_WORD, re.IGNORECASE)
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


# --------------------------------------------------------------------------------------------------
# Free text: log lines, tracebacks, Sentry events
# --------------------------------------------------------------------------------------------------

# Secrets shorter than this are not searched for inside strings: a 3-character "token" would blank out
# every word that happens to contain it.
MIN_SECRET_LEN = 6

# `password='x'`, `"token": "x"`, `token=x&...`, `Authorization: Bearer x`, `\"secret\": \"x\"` (escaped JSON).
_KEY_VALUE = re.compile(
    r"(?P<key>[\w.-]*" + _SECRET_WORD + r"[\w.-]*)(?P<close>\\?['\"])?(?P<sep>\s*[:=]\s*)"
    r"(?!\\?['\"]?\[redacted\])"  # already redacted: scrubbing twice changes nothing
    r"(?P<value>\\?\"(?:[^\"\\]|\\.)*?\\?\"|'(?:[^'\\]|\\.)*'|(?:(?:bearer|basic|token|digest)\s+)?[^\s,;&'\"}\])]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\bBearer\s+\S+", re.IGNORECASE)


def _kv_sub(m: re.Match[str]) -> str:
    value = m.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ('\\"' if value.startswith('\\"') else "")
    return f"{m.group('key')}{m.group('close') or ''}{m.group('sep')}{quote}{REDACTED}{quote}"


_secrets_cache: tuple[Any, tuple[str, ...]] = (None, ())


def _json_strings(raw: str) -> list[str]:
    """The values of a secret setting that is a JSON object (OPSQ_WEBHOOK_SECRETS: origin -> key): each key
    is a secret of its own, and may appear without the rest of the object."""
    if not raw.lstrip().startswith("{"):
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        return []
    return [v for v in parsed.values() if isinstance(v, str)] if isinstance(parsed, dict) else []


def _secrets_of(settings: Any) -> tuple[str, ...]:
    values: set[str] = set()
    for platform in PLATFORMS:
        token = settings.token(platform)
        if token:
            values.add(token)
    # Every other secret setting too (Trello's API key, the Sentry DSN).
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and value.get_secret_value():
            values.add(value.get_secret_value())
            values.update(_json_strings(value.get_secret_value()))
    return tuple(sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True))


def configured_secrets() -> tuple[str, ...]:
    """The configured platform tokens (and other secret settings), longest first. Recomputed when the
    settings are reloaded."""
    global _secrets_cache
    try:
        settings = get_settings()
    except ValidationError:  # broken settings must not break logging or error reporting
        return ()
    cached_for, secrets = _secrets_cache
    if cached_for is not settings:
        secrets = _secrets_of(settings)
        _secrets_cache = (settings, secrets)
    return secrets


def scrub_text(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """Removes configured tokens, bearer tokens and `secret-key = value` pairs from a string."""
    if not text:
        return text
    for secret in configured_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _KEY_VALUE.sub(_kv_sub, text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


def scrub_value(value: Any, secrets: tuple[str, ...], depth: int = 0) -> Any:
    if depth > 64:
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, bytes | bytearray):
        return scrub_text(bytes(value).decode("utf-8", "replace"), secrets)
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k)
                    else redact_url(v) if k in URL_KEYS and isinstance(v, str)
                    else scrub_value(v, secrets, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Headers as [name, value] pairs (Sentry's request.headers may come this way).
        if len(value) == 2 and isinstance(value[0], str) and is_secret_key(value[0]):
            return [value[0], REDACTED]
        return [scrub_value(v, secrets, depth + 1) for v in value]
    return value
