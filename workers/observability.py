"""Sentry and structured logs. (Filled in by the observability work; install() must stay cheap.)"""

from __future__ import annotations

from typing import Any


def install(app: Any) -> None:
    return None
