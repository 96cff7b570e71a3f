"""The worker's consumer, with a quarantine for messages that are kombu messages but cannot be run.

Why this exists: workers.broker_transport quarantines queue items that are not messages at all. A well-formed
kombu message can still be unrunnable: a task this worker does not know, no task header, a serializer we do
not accept (pickle: JSON only), a body that is not Celery's [args, kwargs, embed], arguments that do not fit
the task (`opsq.execute_action` without its params, or with a string for a number), or params over
OPSQ_MAX_PARAMS_BYTES pushed straight onto a queue. Celery would log such a message's whole body (its
`on_unknown_message`, `on_unknown_task`, `on_invalid_task`, `on_decode_error`), which can carry an action's
params and secrets into the log, and broken arguments surface only as a TypeError in the pool, after the
message was handed over. Here each is checked in the consumer before Celery's strategy sees it: it goes to the
same quarantine list (its reason, its queue, its size; the whole message when small enough to be put back with
`opsq queue quarantine requeue`), is acknowledged so it is not delivered again, and gets one log line without
its body.

Installed through Celery's `worker_consumer` setting (workers.celery_app).
"""

from __future__ import annotations

import inspect
import json
import logging
import typing
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from celery import signals
from celery.exceptions import NotRegistered
from celery.utils.functional import head_from_fun
from celery.worker.consumer import Consumer
from kombu.message import Message
from kombu.serialization import prepare_accept_content
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from workers.broker_transport import QUARANTINE_KEY, QUARANTINE_MAX, QUARANTINED_COUNT_KEY, quarantine_record
from workers.guards.connection import guard_redis
from workers.settings import get_settings

log = logging.getLogger("opsq.worker")

EXECUTE_ACTION = "opsq.execute_action"  # workers.celery_app's name for it (that module names this one)
#: A quarantined message up to this size is kept whole, so it can be put back on its queue; a larger one keeps
#: only its first bytes (broker_transport.RAW_KEPT_BYTES): the list holds up to QUARANTINE_MAX of them.
KEEP_WHOLE_BYTES = 65_536
_SHOWN = 120  # characters of a name, an id or an error shown in a reason or a log line


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


class Unrunnable(Exception):
    """Why a message cannot be run; `requeueable` when another worker (a newer version, other settings) could."""

    def __init__(self, reason: str, *, requeueable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.requeueable = requeueable


def _kwargs_model(fun: Callable[..., Any]) -> type[BaseModel] | None:
    """A strict pydantic model of a task function's keyword arguments, from its annotations (so it follows the
    task's signature as that changes); None when an annotation is not something pydantic can check."""
    try:
        hints = typing.get_type_hints(fun)
        fields: dict[str, Any] = {}
        for name, param in inspect.signature(fun).parameters.items():
            if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            default = ... if param.default is param.empty else param.default
            fields[name] = (hints.get(name, Any), default)
        return create_model(f"{getattr(fun, '__name__', 'task')}_kwargs",
                            __config__=ConfigDict(strict=True, extra="forbid"), **fields)
    except Exception:  # the arity check still applies; the types are a bonus
        log.warning("cannot build a type check for the arguments of %s", getattr(fun, "__name__", fun))
        return None


class MessageCheck:
    """What the consumer checks before Celery's strategy builds a request (pure: no I/O)."""

    #: tasks whose keyword arguments are type-checked too: the one that carries a service's data
    TYPED_TASKS = frozenset({EXECUTE_ACTION})

    def __init__(self, tasks: typing.Mapping[str, Any], accept: set[str], max_params_bytes: int) -> None:
        self.tasks = tasks
        self.accept = accept
        self.max_params_bytes = max_params_bytes
        self._models: dict[str, type[BaseModel] | None] = {}
        self._headers: dict[str, Callable[..., Any]] = {}

    def check(self, headers: Any, content_type: str | None, body_size: int, decode: Callable[[], Any]) -> str:
        """The task's name, or Unrunnable saying why the message cannot run here."""
        if not isinstance(headers, dict) or "task" not in headers:
            raise Unrunnable("no task header: not a Celery task message", requeueable=False)
        name = headers["task"]
        if not isinstance(name, str):
            raise Unrunnable("a task header that is not a name", requeueable=False)
        if content_type not in self.accept:
            raise Unrunnable(f"content type {_short(content_type)!r} is not accepted (JSON only)", requeueable=False)
        task = self.tasks.get(name)
        if task is None:
            raise Unrunnable(f"unknown task {_short(name)!r} (not registered on this worker)", requeueable=True)
        try:
            payload = decode()
        except Exception as exc:  # whatever the decoder raises, the message cannot run
            raise Unrunnable(f"a body that cannot be decoded ({type(exc).__name__})", requeueable=False) from None
        if not (isinstance(payload, list | tuple) and len(payload) == 3 and isinstance(payload[0], list | tuple)
                and isinstance(payload[1], dict) and isinstance(payload[2], dict | None)):
            raise Unrunnable("a body that is not Celery's [args, kwargs, embed]", requeueable=False)
        args, kwargs = payload[0], payload[1]
        try:
            self._header(name, task)(*args, **kwargs)
        except TypeError as exc:
            raise Unrunnable(f"arguments that do not fit {name}: {_short(exc)}", requeueable=True) from None
        if name in self.TYPED_TASKS:
            self._check_types(name, task, kwargs)
            if name == EXECUTE_ACTION and body_size > self.max_params_bytes:  # the params can only be this big
                size = len(json.dumps(kwargs.get("params"), separators=(",", ":"), default=str).encode())
                if size > self.max_params_bytes:
                    raise Unrunnable(f"params are {size} bytes of JSON; the limit is {self.max_params_bytes} "
                                     "(OPSQ_MAX_PARAMS_BYTES)", requeueable=True)
        return name

    def _header(self, name: str, task: Any) -> Callable[..., Any]:
        if name not in self._headers:
            # Celery's own arity check (Task.__header__, what `apply_async` runs when `typing` is on).
            header = getattr(task, "__header__", None)
            self._headers[name] = header if callable(header) else head_from_fun(task.run)
        return self._headers[name]

    def _check_types(self, name: str, task: Any, kwargs: dict[str, Any]) -> None:
        if name not in self._models:
            self._models[name] = _kwargs_model(task.run)
        model = self._models[name]
        if model is None:
            return
        try:
            model.model_validate(kwargs)
        except ValidationError as exc:
            # Field names and error types only: the values are the message's data.
            wrong = ", ".join(f"{'.'.join(str(p) for p in e['loc'])} ({e['type']})" for e in exc.errors()[:5])
            raise Unrunnable(f"arguments of the wrong type for {name}: {_short(wrong)}", requeueable=True) from None


def _raw_message(message: Message) -> bytes:
    """The queue item as kombu's Redis transport had it (the JSON envelope), to keep or put back."""
    raw = getattr(message, "_raw", None)
    if not isinstance(raw, dict):
        serializable = getattr(message, "serializable", None)
        raw = serializable() if callable(serializable) else {"body": message.body, "headers": message.headers}
    return json.dumps(raw, default=str).encode()


def quarantine_message(message: Message, reason: str, *, requeueable: bool) -> dict[str, Any]:
    """Keep the message in opsq:quarantine (the list workers.broker_transport fills), count it, log one line."""
    delivery = message.delivery_info or {}
    queue = str(delivery.get("routing_key") or delivery.get("exchange") or "?")
    raw = _raw_message(message)
    record = quarantine_record(queue, raw, reason)
    headers = message.headers if isinstance(message.headers, dict) else {}
    task, task_id = headers.get("task"), headers.get("id")
    record.update(stage="consumer", task=_short(task) if task is not None else None,
                  id=_short(task_id) if task_id is not None else None,
                  requeueable=requeueable and len(raw) <= KEEP_WHOLE_BYTES)
    if len(raw) <= KEEP_WHOLE_BYTES:
        record["message"] = raw.decode()
    conn_or_acquire = getattr(message.channel, "conn_or_acquire", None)
    # the Redis the message came from (the guards' client for a transport without one)
    with (conn_or_acquire() if conn_or_acquire is not None else nullcontext(guard_redis())) as client:
        pipe = client.pipeline()
        pipe.lpush(QUARANTINE_KEY, json.dumps(record))
        pipe.ltrim(QUARANTINE_KEY, 0, QUARANTINE_MAX - 1)
        pipe.incr(QUARANTINED_COUNT_KEY)
        pipe.execute()
    log.error("quarantined a message from queue %s that cannot be run: %s (task %s, id %s, %d bytes; "
              "opsq queue quarantine list)", queue, reason, record["task"], record["id"], record["bytes"])
    return record


class OpsqConsumer(Consumer):
    """Celery's consumer, but a message that cannot be run is quarantined, acknowledged and logged in one line
    without its body; the checks run before Celery's own handling, whose fallbacks are overridden too."""

    _check: MessageCheck | None = None

    def _message_check(self) -> MessageCheck:
        if self._check is None:
            accept = prepare_accept_content(self.app.conf.accept_content) or {"application/json"}
            self._check = MessageCheck(self.app.tasks, set(accept), get_settings().max_params_bytes)
        return self._check

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Message], Any]:
        celery_handler = super().create_task_handler(*args, **kwargs)
        check = self._message_check()

        def on_task_received(message: Message) -> Any:
            try:
                check.check(message.headers, message.content_type, len(message.body or b""),
                            lambda: message.decode())
            except Unrunnable as why:
                return self._refuse(message, why.reason, requeueable=why.requeueable)
            try:
                return celery_handler(message)
            except self.connection_errors:
                raise
            except Exception as exc:  # one odd message must not stop the worker
                if message.acknowledged:
                    raise
                return self._refuse(message, f"refused by Celery's strategy ({type(exc).__name__})",
                                    requeueable=False)

        return on_task_received

    def _refuse(self, message: Message, reason: str, *, requeueable: bool) -> None:
        quarantine_message(message, reason, requeueable=requeueable)
        # reject without requeue: removed from the unacknowledged set, never delivered again
        message.reject_log_error(log, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=None)

    # Celery's handlers, reached only if a message gets past the checks above; each logs the whole body.

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self._refuse(message, "not a Celery task message", requeueable=False)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._refuse(message, f"unknown task ({_short(exc)})", requeueable=True)
        headers = message.headers if isinstance(message.headers, dict) else {}
        if isinstance(headers.get("id"), str) and isinstance(headers.get("task"), str):
            # as Celery does: whoever waits on the result hears that the task is not registered
            self.app.backend.mark_as_failure(headers["id"], NotRegistered(headers["task"]))

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self._refuse(message, f"an invalid task message ({type(exc).__name__})", requeueable=False)

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self._refuse(message, f"a body that cannot be decoded ({type(exc).__name__})", requeueable=False)
