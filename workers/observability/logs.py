"""Logs: one JSON object per line (OPSQ_LOG_FORMAT=json, the default) or Celery's text format, with
secrets removed from every message and traceback."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Any

from celery._state import get_current_task
from pydantic import ValidationError

from workers.observability import tracing
from workers.observability.config import LOG_FORMATS, observability_settings
from workers.observability.sentry import announce_sentry
from workers.redaction import scrub_text

log = logging.getLogger("opsq.observability")

LOG_FIELDS = ("action_id", "platform", "action", "attempt", "workflow_id", "step_id")


class RedactFilter(logging.Filter):
    """Rewrites each record's message with its secrets removed (bearer tokens, configured tokens,
    `password=...` pairs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format: leave it to the formatter to complain
            return True
        clean = scrub_text(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return scrub_text("\n".join(parts)) if parts else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the action's ids when the log call passed
    them as `extra`, the running Celery task's id and name, and the (redacted) traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub_text(record.getMessage()),
        }
        for field in LOG_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                doc[field] = value
        ids = tracing.current_ids()
        if ids is not None:
            doc["trace_id"], doc["span_id"] = ids
        task_id, task_name = _task_context(record)
        if task_id:
            doc["task_id"] = task_id
        if task_name:
            doc["task_name"] = task_name
        doc["process"] = record.processName
        exc = _exception_text(self, record)
        if exc:
            doc["exc_info"] = exc
        return json.dumps(doc, default=str, ensure_ascii=False)


def _task_context(record: logging.LogRecord) -> tuple[str | None, str | None]:
    task_id = getattr(record, "task_id", None)
    task_name = getattr(record, "task_name", None)
    if task_id and task_id != "???":
        return str(task_id), (str(task_name) if task_name and task_name != "???" else None)
    try:
        task = get_current_task()
    except Exception:
        return None, None
    if task is None or getattr(task, "request", None) is None or not task.request.id:
        return None, None
    return str(task.request.id), str(task.name)


class RedactingFormatter(logging.Formatter):
    """Wraps Celery's text formatter: the whole formatted line (traceback included) loses its secrets."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(self.inner.format(record))


def configure_handlers(logger: logging.Logger, log_format: str) -> None:
    for handler in logger.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
        if log_format == "json":
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())
        elif not isinstance(handler.formatter, RedactingFormatter):
            handler.setFormatter(RedactingFormatter(handler.formatter))


def _log_format() -> str:
    try:
        value = observability_settings().log_format
    except ValidationError:
        value = os.environ.get("OPSQ_LOG_FORMAT", "")
    if value in LOG_FORMATS:
        return value
    log.warning("OPSQ_LOG_FORMAT=%r is not one of %s; using json", value, "/".join(LOG_FORMATS))
    return "json"


def on_after_setup_logger(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        configure_handlers(logger, _log_format())
    announce_sentry()


def on_after_setup_task_logger(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        configure_handlers(logger, _log_format())

