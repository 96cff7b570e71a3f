"""Sentry and structured logs, hooked into the worker through Celery's signals.

install(app) only connects signal handlers; nothing is configured until a worker (or beat) starts:

* Sentry, when OPSQ_SENTRY_DSN is set: initialised in the worker's main process before the pool forks
  (`celeryd_init`, so the Celery integration's tracer patch is in place when the children build their
  tracers) and again in each prefork child (`worker_process_init`: a client of its own, no HTTP
  connection shared with the parent). Every event passes through scrub(). Task failures are captured by
  sentry-sdk's Celery integration (ActionFailed is not a `throws` exception, so it is reported).
* Each opsqueue task's Sentry scope is tagged with platform, action, action_id, workflow_id and step_id
  (`task_prerun`, cleared on `task_postrun`).
* Logs: one JSON object per line (OPSQ_LOG_FORMAT=json, the default) or Celery's text format
  (OPSQ_LOG_FORMAT=text); either way, bearer tokens, key=value secrets and the configured platform tokens
  are removed from every message and traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import json
import logging
import os
import re
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.redaction import REDACTED, URL_KEYS, is_secret_key, redact_url

log = logging.getLogger("opsq.observability")

# Secrets shorter than this are not searched for inside strings: a 3-character "token" would blank out
# every word that happens to contain it.
MIN_SECRET_LEN = 6
LOG_FIELDS = ("action_id", "platform", "action", "attempt", "workflow_id", "step_id")
LOG_FORMATS = ("json", "text")
SENTRY_TAGS = ("platform", "action", "action_id", "workflow_id", "step_id")


class ObservabilitySettings(BaseSettings):
    """The OPSQ_* settings this module reads (kept out of workers.settings on purpose)."""

    model_config = SettingsConfigDict(env_prefix="OPSQ_", extra="ignore", case_sensitive=False)

    sentry_dsn: SecretStr | None = None
    sentry_environment: str | None = None
    sentry_traces_sample_rate: float = Field(0.0, ge=0.0, le=1.0)
    flower_user: str | None = None
    flower_password: SecretStr | None = None
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_address: str = "0.0.0.0"
    # json or text; anything else falls back to json with a warning (see _log_format), so a typo here
    # cannot switch Sentry off.
    log_format: str = "json"

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @property
    def dsn(self) -> str | None:
        value = self.sentry_dsn.get_secret_value().strip() if self.sentry_dsn else ""
        return value or None


def observability_settings() -> ObservabilitySettings:
    return ObservabilitySettings()


# --------------------------------------------------------------------------------------------------
# Redaction of free text and of whole Sentry events
# --------------------------------------------------------------------------------------------------

# The words workers.redaction.is_secret_key looks for in keys.
_SECRET_WORD = (r"(?:pass(?:word)?|secret|token|api[_-]?key|authori[sz]ation|cookie|credential"
                r"|private[_-]?key|signature)")
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


def _secrets_of(settings: Any) -> tuple[str, ...]:
    from workers.settings import DEFAULT_BASE_URLS

    values: set[str] = set()
    for platform in DEFAULT_BASE_URLS:
        token = settings.token(platform)
        if token:
            values.add(token)
    # Every other secret setting too (Trello's API key, the Sentry DSN).
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr) and value.get_secret_value():
            values.add(value.get_secret_value())
    return tuple(sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True))


def configured_secrets() -> tuple[str, ...]:
    """The configured platform tokens (and other secret settings), longest first. Recomputed when the
    settings are reloaded."""
    global _secrets_cache
    from workers.settings import get_settings

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


def _scrub_value(value: Any, secrets: tuple[str, ...], depth: int = 0) -> Any:
    if depth > 64:
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, bytes | bytearray):
        return scrub_text(bytes(value).decode("utf-8", "replace"), secrets)
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k)
                    else redact_url(v) if k in URL_KEYS and isinstance(v, str)
                    else _scrub_value(v, secrets, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Headers as [name, value] pairs (Sentry's request.headers may come this way).
        if len(value) == 2 and isinstance(value[0], str) and is_secret_key(value[0]):
            return [value[0], REDACTED]
        return [_scrub_value(v, secrets, depth + 1) for v in value]
    return value


def scrub(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry's before_send / before_send_transaction: every part of the event (request, extra, contexts,
    breadcrumbs, exception values and frame variables, the Celery job's args/kwargs, tags, spans) loses
    its secrets. Values under secret-looking keys become "[redacted]"; strings lose configured tokens,
    bearer tokens and `password=...`-style pairs."""
    scrubbed: dict[str, Any] = _scrub_value(event, configured_secrets())
    return scrubbed


def before_send(event: dict[str, Any], hint: dict[str, Any] | None) -> dict[str, Any] | None:
    record = (hint or {}).get("log_record")
    # execute_action logs "action failed for good" and then raises ActionFailed, which the Celery
    # integration reports with the traceback and the task: the log line would be the same error twice.
    # Log records with a traceback (log.exception: "action crashed") are kept.
    if record is not None and record.name == "opsq.action" and not record.exc_info:
        return None
    return scrub(event, hint)


# --------------------------------------------------------------------------------------------------
# Sentry
# --------------------------------------------------------------------------------------------------

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
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    # One integration object per process tree: creating another would patch Celery beat a second time.
    if _celery_integration is None:
        _celery_integration = CeleryIntegration(monitor_beat_tasks=True)
    release = None
    with contextlib.suppress(Exception):
        from importlib.metadata import version

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


def _announce_sentry() -> None:
    """Says once per worker that Sentry is on (in the main process, once its logging is set up)."""
    global _announced
    if _sentry_pid == os.getpid() and not _announced and logging.getLogger().handlers:
        _announced = True
        import sentry_sdk

        environment = sentry_sdk.get_client().options.get("environment")
        log.info("Sentry error reporting is on (environment %s)", environment)


def _init_sentry_logged(**_: Any) -> None:
    try:
        if init_sentry():
            _announce_sentry()
    except Exception as exc:  # a bad DSN must not stop the worker; say so loudly instead
        log.error("Sentry is off: %s", scrub_text(f"{type(exc).__name__}: {exc}"))


def _reinit_sentry_in_child(**_: Any) -> None:
    """A prefork child: a client (and HTTP connection pool) of its own, same integration object."""
    global _announced
    if _sentry_pid is not None and _sentry_pid != os.getpid():
        _announced = True  # the parent said it
        _init_sentry_logged()


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


def _on_task_prerun(sender: Any = None, task_id: Any = None, task: Any = None, args: Any = None,
                    kwargs: Any = None, **_: Any) -> None:
    if _sentry_pid != os.getpid() or task is None or not _is_opsq_task(getattr(task, "name", "")):
        return
    import sentry_sdk

    scope = sentry_sdk.get_isolation_scope()
    for key, value in task_tags(task, args, kwargs).items():
        scope.set_tag(key, value)
    if isinstance(kwargs, dict) and "attempt" in kwargs:
        scope.set_context("opsq", {"attempt": kwargs.get("attempt"), "max_attempts": kwargs.get("max_attempts")})


def _on_task_postrun(sender: Any = None, task: Any = None, **_: Any) -> None:
    if _sentry_pid != os.getpid() or task is None or not _is_opsq_task(getattr(task, "name", "")):
        return
    import sentry_sdk

    scope = sentry_sdk.get_isolation_scope()
    for key in SENTRY_TAGS:
        scope.remove_tag(key)
    scope.remove_context("opsq")


# --------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------


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
        from celery._state import get_current_task

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


def _on_after_setup_logger(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        configure_handlers(logger, _log_format())
    _announce_sentry()


def _on_after_setup_task_logger(logger: logging.Logger | None = None, **_: Any) -> None:
    if logger is not None:
        configure_handlers(logger, _log_format())


# --------------------------------------------------------------------------------------------------


def install(app: Any) -> None:
    """Connects the signal handlers. Cheap: nothing is read or initialised until a worker starts."""
    from celery.signals import (
        after_setup_logger,
        after_setup_task_logger,
        beat_init,
        celeryd_init,
        task_postrun,
        task_prerun,
        worker_process_init,
    )

    celeryd_init.connect(_init_sentry_logged, weak=False, dispatch_uid="opsq.observability.sentry")
    beat_init.connect(_init_sentry_logged, weak=False, dispatch_uid="opsq.observability.sentry_beat")
    worker_process_init.connect(_reinit_sentry_in_child, weak=False, dispatch_uid="opsq.observability.child")
    task_prerun.connect(_on_task_prerun, weak=False, dispatch_uid="opsq.observability.prerun")
    task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="opsq.observability.postrun")
    after_setup_logger.connect(_on_after_setup_logger, weak=False, dispatch_uid="opsq.observability.logs")
    after_setup_task_logger.connect(_on_after_setup_task_logger, weak=False,
                                    dispatch_uid="opsq.observability.task_logs")
