"""Sentry and structured logs, hooked into the worker through Celery's signals.

install(app) only connects signal handlers; nothing is configured until a worker (or beat) starts:

* Sentry, when OPSQ_SENTRY_DSN is set: initialised in the worker's main process before the pool forks
  (`celeryd_init`, so the Celery integration's tracer patch is in place when the children build their
  tracers) and again in each prefork child (`worker_process_init`: a client of its own, no HTTP
  connection shared with the parent). Every event passes through scrub(). A task's crash is captured by
  sentry-sdk's Celery integration; an action or compensation that fails for good (ActionFailed, a `throws`
  exception, which the integration skips) by sentry.failures_reported, once.
* Each opsqueue task's Sentry scope is tagged with platform, action, action_id, workflow_id and step_id
  (`task_prerun`, cleared on `task_postrun`).
* Logs: one JSON object per line (OPSQ_LOG_FORMAT=json, the default) or Celery's text format
  (OPSQ_LOG_FORMAT=text); either way, bearer tokens, key=value secrets and the configured platform tokens
  are removed from every message and traceback.
"""


from __future__ import annotations

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    celeryd_init,
    task_postrun,
    task_prerun,
    worker_process_init,
)

from workers import signal_scope
from workers.observability import logs, sentry


def install(app: Celery) -> None:
    """Connects the signal handlers, for `app`'s workers and beat only. Cheap: nothing is read or
    initialised until a worker starts."""
    for signal, handler, uid in (
        (celeryd_init, sentry.init_sentry_logged, "sentry"),
        (beat_init, sentry.init_sentry_logged, "sentry_beat"),
        (worker_process_init, sentry.reinit_sentry_in_child, "child"),
        (task_prerun, sentry.on_task_prerun, "prerun"),
        (task_postrun, sentry.on_task_postrun, "postrun"),
        (after_setup_logger, logs.on_after_setup_logger, "logs"),
        (after_setup_task_logger, logs.on_after_setup_task_logger, "task_logs"),
    ):
        signal_scope.connect(signal, app, handler, f"opsq.observability.{uid}")
