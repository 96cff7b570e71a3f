"""Sentry: initialised once per process when OPSQ_SENTRY_DSN is set, every event scrubbed, each
opsqueue task's scope tagged with its ids.

sentry_sdk is imported only when a DSN is set: with its transport (urllib3), its Celery integration (which
loads celery.beat) and the rest, it is a few MiB that every worker process without Sentry would hold for
nothing (docs/PERFORMANCE.md, "Worker memory"). Whoever needs to know whether Sentry is on asks sentry_on()."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
from collections.abc import Iterator
from importlib.metadata import version
from types import ModuleType
from typing import TYPE_CHECKING, Any

from workers.errors import ActionFailed
from workers.observability.config import ObservabilitySettings, observability_settings
from workers.redaction import configured_secrets, scrub_text, scrub_value

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

log = logging.getLogger("opsq.observability")

SENTRY_TAGS = ("platform", "action", "action_id", "workflow_id", "step_id")


def scrub(event: Event, hint: Hint | None = None) -> Event:
    """Sentry's before_send / before_send_transaction: every part of the event (request, extra, contexts,
    breadcrumbs, exception values and frame variables, the Celery job's args/kwargs, tags, spans) loses
    its secrets. Values under secret-looking keys become "[redacted]"; strings lose configured tokens,
    bearer tokens and `password=...`-style pairs."""
    scrubbed: Event = scrub_value(event, configured_secrets())
    return scrubbed


#: Set (True) in the `extra` of a log call whose line is a failure that failures_reported sends to Sentry: the
#: line is not sent a second time as a log event (before_send). Not a LOG_FIELD: it never shows in the logs.
FAILURE_LINE = "opsq_failure_line"


def before_send(event: Event, hint: Hint | None) -> Event | None:
    record = (hint or {}).get("log_record")
    # "action failed for good" (a crash's with its traceback) and "compensation failed for good" are reported by
    # failures_reported, with the task's exception: the log line would be the same failure twice. The other
    # opsq.action lines without a traceback (an outcome written to the database only) are log lines, not errors.
    if record is not None and (getattr(record, FAILURE_LINE, False)
                               or (record.name == "opsq.action" and not record.exc_info)):
        return None
    return scrub(event, hint)


def report_failure(exc: BaseException) -> None:
    """One Sentry event for a task's expected failure, built as the Celery integration builds its own (mechanism
    `celery`, unhandled; the task's scope: its tags, its Celery context), scrubbed by before_send like any event.
    A no-op without an active client."""
    sdk = sentry_on()
    if sdk is None:
        return
    from sentry_sdk.utils import event_from_exception  # noqa: PLC0415 - imported only where Sentry is on

    event, hint = event_from_exception(exc, client_options=sdk.get_client().options,
                                       mechanism={"type": "celery", "handled": False})
    sdk.capture_event(event, hint=hint)


@contextlib.contextmanager
def failures_reported() -> Iterator[None]:
    """Around a task that declares `throws=(ActionFailed,)`: Celery then logs its ActionFailed at INFO without a
    traceback (the task has logged its own failure line) and the Celery integration skips it, so it is reported
    here instead, once: an action or compensation that failed for good now (not a redelivery finding it failed
    before, `repeat`). Retries (Celery's Retry) and hand-backs (Reject) are not failures and pass through; any
    other exception is a crash, left to Celery's traceback and the Celery integration."""
    try:
        yield
    except ActionFailed as exc:
        if not exc.repeat:
            report_failure(exc)
        raise



_sentry_pid: int | None = None
_celery_integration: Any = None


def init_sentry(settings: ObservabilitySettings | None = None) -> bool:
    """sentry_sdk.init once per process when OPSQ_SENTRY_DSN is set. Returns whether Sentry is on."""
    global _sentry_pid, _celery_integration
    if _sentry_pid == os.getpid():
        return True
    settings = settings or observability_settings()
    dsn = settings.dsn
    if not dsn:
        return False

    # Imported here, not at the top: only a process with a DSN needs it (see the module's docstring).
    import sentry_sdk  # noqa: PLC0415
    from sentry_sdk.integrations.celery import CeleryIntegration  # noqa: PLC0415

    # One integration object per process tree: creating another would patch Celery beat a second time.
    if _celery_integration is None:
        _celery_integration = CeleryIntegration(monitor_beat_tasks=True)
    release = None
    with contextlib.suppress(Exception):
        release = f"opsqueue@{version('opsqueue')}"
    sentry_sdk.init(
        dsn=dsn,
        environment=settings.sentry_environment,
        release=release,
        integrations=[_celery_integration],
        send_default_pii=False,
        # Off: a frame's variables hold an action's params as repr() text, where a webhook URL's secret
        # path (or a secret under an innocent name) cannot be told apart and scrubbed.
        include_local_variables=False,
        before_send=before_send,
        before_send_transaction=scrub,
        traces_sample_rate=settings.sentry_traces_sample_rate or None,
    )
    _sentry_pid = os.getpid()
    return True


_announced = False


def announce_sentry() -> None:
    """Says once per worker that Sentry is on (in the main process, once its logging is set up)."""
    global _announced
    sdk = _ours()
    if sdk is not None and not _announced and logging.getLogger().handlers:
        _announced = True
        environment = sdk.get_client().options.get("environment")
        log.info("Sentry error reporting is on (environment %s)", environment)


def init_sentry_logged(**_: Any) -> None:
    try:
        if init_sentry():
            announce_sentry()
    except Exception as exc:  # a bad DSN must not stop the worker; say so loudly instead
        log.error("Sentry is off: %s", scrub_text(f"{type(exc).__name__}: {exc}"))


def reinit_sentry_in_child(**_: Any) -> None:
    """A prefork child: a client (and HTTP connection pool) of its own, same integration object."""
    global _announced
    if _sentry_pid is not None and _sentry_pid != os.getpid():
        _announced = True  # the parent said it
        init_sentry_logged()


def sentry_on() -> ModuleType | None:
    """sentry_sdk when a Sentry client is active in this process (init_sentry's, or one its host service
    made), else None. Found without importing it: no client can be active where nothing imported sentry_sdk."""
    sdk = sys.modules.get("sentry_sdk")
    if sdk is None or not sdk.get_client().is_active():
        return None
    return sdk


def _is_opsq_task(name: str) -> bool:
    return name == "opsq.execute_action" or name.startswith("opsq.workflow.")


def task_tags(task: Any, args: Any, kwargs: Any) -> dict[str, str]:
    """platform/action/action_id/workflow_id/step_id from an opsqueue task's arguments."""
    named: dict[str, Any] = dict(kwargs or {})
    if args:
        with contextlib.suppress(TypeError, ValueError):
            named = {**inspect.signature(task.run).bind_partial(*args, **(kwargs or {})).arguments}
    step = named.get("step")
    if isinstance(step, dict):
        named = {**named, **{k: v for k, v in step.items() if k in ("workflow_id", "step_id")}}
    return {key: str(named[key]) for key in SENTRY_TAGS if named.get(key) is not None}


def _ours() -> ModuleType | None:
    """sentry_sdk if init_sentry ran in this process (so it is imported), else None."""
    return sys.modules.get("sentry_sdk") if _sentry_pid == os.getpid() else None


def on_task_prerun(sender: Any = None, task_id: Any = None, task: Any = None, args: Any = None,
                    kwargs: Any = None, **_: Any) -> None:
    sdk = _ours()
    if sdk is None or task is None or not _is_opsq_task(getattr(task, "name", "")):
        return

    scope = sdk.get_isolation_scope()
    for key, value in task_tags(task, args, kwargs).items():
        scope.set_tag(key, value)
    if isinstance(kwargs, dict) and "attempt" in kwargs:
        scope.set_context("opsq", {"attempt": kwargs.get("attempt"), "max_attempts": kwargs.get("max_attempts")})


def on_task_postrun(sender: Any = None, task: Any = None, **_: Any) -> None:
    sdk = _ours()
    if sdk is None or task is None or not _is_opsq_task(getattr(task, "name", "")):
        return

    scope = sdk.get_isolation_scope()
    for key in SENTRY_TAGS:
        scope.remove_tag(key)
    scope.remove_context("opsq")


