"""The real Celery app with crash windows held open, so a test can SIGKILL a worker at an exact point.

OPSQ_TEST_PAUSE_BEFORE_CALL_S: sleep after the guards admitted the action (lease taken), before the
platform call. OPSQ_TEST_PAUSE_AFTER_TASK_S: sleep after the task finished (outcome recorded), before
the worker acknowledges the message (task_postrun runs in the pool process before the ack).
OPSQ_TEST_HOLD_SEND_FILE (beat): once the scheduled release has claimed an action (workers.scheduling), write its
id to this file and hold the send an hour, so the test can SIGKILL beat between the claim and the send.
OPSQ_TEST_CRASH=executor: every executor call raises (a bug in an executor, which the attempt catches);
OPSQ_TEST_CRASH=task: execute_action's attempt raises (a bug in the task itself, which escapes it)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import task_postrun

import workers.tasks as tasks
from workers import scheduling
from workers.celery_app import app

__all__ = ["app"]

PAUSE_BEFORE_CALL = float(os.environ.get("OPSQ_TEST_PAUSE_BEFORE_CALL_S", "0"))
PAUSE_AFTER_TASK = float(os.environ.get("OPSQ_TEST_PAUSE_AFTER_TASK_S", "0"))

CRASH = os.environ.get("OPSQ_TEST_CRASH", "")

_real_executor = tasks.executor


class InjectedBug(RuntimeError):
    """The bug a test planted (OPSQ_TEST_CRASH)."""


class _Crashing:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def execute(self, action: str, params: dict[str, Any], *args: Any) -> Any:
        raise InjectedBug(f"executor bug in {action} (planted by the test)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _crashing_attempt(*args: Any, **kwargs: Any) -> Any:
    raise InjectedBug("task bug (planted by the test)")


class _Paused:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def execute(self, action: str, params: dict[str, Any], *args: Any) -> Any:
        time.sleep(PAUSE_BEFORE_CALL)
        return self.inner.execute(action, params, *args)

    def __getattr__(self, name: str) -> Any:  # find, find_undone, compensate: the real executor's
        return getattr(self.inner, name)


HOLD_SEND_FILE = os.environ.get("OPSQ_TEST_HOLD_SEND_FILE", "")


def _held_send(**kwargs: Any) -> None:
    with open(HOLD_SEND_FILE, "a") as f:
        f.write(f"{kwargs['action_id']}\n")
    time.sleep(3600)
    raise AssertionError("beat was to be killed while holding the send")


if HOLD_SEND_FILE:
    scheduling.send_action = _held_send  # type: ignore[assignment]
if PAUSE_BEFORE_CALL:
    tasks.executor = lambda platform: _Paused(_real_executor(platform))  # type: ignore[assignment]
if CRASH == "executor":
    tasks.executor = lambda platform: _Crashing(_real_executor(platform))  # type: ignore[assignment]
elif CRASH == "task":
    tasks.run_attempt = _crashing_attempt  # type: ignore[assignment]


@task_postrun.connect
def _hold_the_ack(**_: Any) -> None:
    if PAUSE_AFTER_TASK:
        time.sleep(PAUSE_AFTER_TASK)
