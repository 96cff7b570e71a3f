"""Connecting opsqueue's hooks to Celery's signals for opsqueue's own app only.

Celery's signals are process-wide: a receiver hears the workers of every app in the process. A service that
imports opsqueue's client API (`submit_action`, `submit_workflow`) and runs Celery workers of its own must
not get opsqueue's JSON logs, Sentry set-up, schema migration or paused-queue handling in them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from celery._state import get_current_app
from celery.utils.dispatch import Signal


def connect(signal: Signal, app: Celery, handler: Callable[..., Any], uid: str) -> None:
    def receiver(sender: Any = None, **kwargs: Any) -> Any:
        if app_of(sender, kwargs) is app:
            return handler(sender=sender, **kwargs)
        return None

    # weak=False: the receiver is a closure that nothing else holds.
    signal.connect(receiver, weak=False, dispatch_uid=uid)


def app_of(sender: Any, kwargs: dict[str, Any]) -> Any:
    """The app a signal is about: the worker's (`instance`), the task's, the sender's (a worker, beat's
    service), else the current app: a worker makes its app the current one, in its pool processes too."""
    for candidate in (kwargs.get("instance"), kwargs.get("task"), sender):
        found = getattr(candidate, "app", None)
        if found is not None:
            return found
    return get_current_app()
