"""Errors the client API and the CLI report to people: one clear line each."""

from __future__ import annotations


class OpsqError(Exception):
    """Base for errors that carry a message meant for the user."""


class ConfigError(OpsqError):
    pass


class SubmitError(OpsqError, ValueError):
    """Bad input at submit time: nothing was enqueued, nothing was stored."""


class EnqueueError(OpsqError):
    """The broker refused or could not be reached: the submit was undone, nothing is queued."""


class NotFound(OpsqError, LookupError):
    pass


class NotAllowed(OpsqError):
    """The actor may not do this (an approval policy: not an approver, or the submitter approving)."""


class ActionFailed(Exception):
    """Raised by execute_action when an action fails for good, so Celery marks the task FAILURE
    (chords, errbacks and Flower see it). Only plain strings in args: JSON result backends rebuild it.

    `repeat`: a redelivered message found a failure already recorded (and reported) by an earlier delivery;
    it is not reported to Sentry again (workers.observability.sentry.failures_reported). Not in args: it
    only matters in the process that raised it."""

    def __init__(self, kind: str, message: str, *, repeat: bool = False) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message
        self.repeat = repeat

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
