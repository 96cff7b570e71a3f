"""Removes secrets from anything that is stored, logged or shown (params, results, errors)."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authori[sz]ation|cookie|credential|private[_-]?key|signature)",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def contains_redacted(value: Any) -> bool:
    if value == REDACTED:
        return True
    if isinstance(value, dict):
        return any(contains_redacted(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_redacted(v) for v in value)
    return False


def kwargs_repr(kwargs: dict[str, Any]) -> str:
    """What logs, events and Flower show of a message's kwargs (Celery's `kwargsrepr`): secrets removed."""
    return repr(redact(kwargs))
