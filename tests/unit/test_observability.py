"""workers.observability (Sentry event scrubbing, the JSON log format, task tags, settings) and
workers.redaction's free-text scrubbing."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
from celery import Celery

from workers import redaction
from workers.observability import config, logs, sentry
from workers.redaction import REDACTED
from workers.settings import reload_settings

SECRETS = ("hunter2", "s3cr3t-token", "xoxb-super-secret-123", "cookie-value-9", "qs-token-7", "pk-abcdef")


@pytest.fixture
def slack_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPSQ_SLACK_TOKEN", "xoxb-super-secret-123")
    reload_settings()
    return "xoxb-super-secret-123"


def synthetic_event() -> dict:
    params = {"url": "https://hooks.example/x", "json": {"password": "hunter2", "keep": "visible"},
              "headers": {"Authorization": "Bearer s3cr3t-token", "X-Trace": "t-1"}}
    return {
        "event_id": "e1",
        "level": "error",
        "tags": {"platform": "webhook", "action": "post", "action_id": "a1"},
        "request": {
            "url": "https://api.example/hook?token=qs-token-7&page=2",
            "query_string": "token=qs-token-7&page=2",
            "headers": {"Authorization": "Bearer s3cr3t-token", "Content-Type": "application/json"},
            "cookies": "session=cookie-value-9",
            "data": {"password": "hunter2", "name": "ok"},
            "env": {"REMOTE_ADDR": "10.0.0.1"},
        },
        "extra": {
            "celery-job": {"task_name": "opsq.execute_action", "args": [],
                           "kwargs": {"action_id": "a1", "params": params}},
            "body": '{"password": "hunter2", "n": 1}',
            "private_key": "pk-abcdef",
        },
        "contexts": {"opsq": {"attempt": 1, "api_key": "hunter2"},
                     "response": {"headers": [["Authorization", "Bearer s3cr3t-token"], ["X-Trace", "t-1"]]}},
        "breadcrumbs": {"values": [
            {"category": "opsq.action", "message": "calling with Authorization: Bearer s3cr3t-token",
             "data": {"token": "xoxb-super-secret-123", "attempt": 1}},
            {"category": "httplib", "data": {"url": "https://slack.example/api?token=qs-token-7"}},
            {"category": "log", "message": "used xoxb-super-secret-123 for #ops"},
        ]},
        "exception": {"values": [{
            "type": "ActionFailed",
            "value": "permanent: rejected header Bearer s3cr3t-token (password='hunter2')",
            "stacktrace": {"frames": [{
                "function": "execute_action",
                "vars": {
                    "params": {"json": {"password": "'hunter2'"},
                               "headers": {"Authorization": "'Bearer s3cr3t-token'"}},
                    "p": "PostParams(url='https://x', json_body={'password': 'hunter2'}, "
                         "headers={'Authorization': 'Bearer s3cr3t-token'})",
                    "token": "'xoxb-super-secret-123'",
                    "config": "ExecutorConfig(base_url='https://slack.com/api', token='xoxb-super-secret-123')",
                    "attempt": "1",
                },
            }]},
        }]},
        "logentry": {"message": "failed: %s", "params": ["Bearer s3cr3t-token"]},
    }


def test_scrub_removes_secrets_from_every_part_of_an_event(slack_token):
    event = synthetic_event()
    assert all(s in json.dumps(event) for s in SECRETS)  # they are all there to begin with

    scrubbed = sentry.scrub(event, {})
    text = json.dumps(scrubbed)
    for secret in SECRETS:
        assert secret not in text, secret
    # What is not secret stays, so the event is still useful.
    assert scrubbed["tags"] == {"platform": "webhook", "action": "post", "action_id": "a1"}
    assert scrubbed["request"]["headers"] == {"Authorization": REDACTED, "Content-Type": "application/json"}
    assert scrubbed["request"]["data"] == {"password": REDACTED, "name": "ok"}
    assert "page=2" in scrubbed["request"]["query_string"]
    kwargs = scrubbed["extra"]["celery-job"]["kwargs"]
    assert kwargs["params"]["json"] == {"password": REDACTED, "keep": "visible"}
    assert kwargs["params"]["headers"] == {"Authorization": REDACTED, "X-Trace": "t-1"}
    assert scrubbed["contexts"]["opsq"] == {"attempt": 1, "api_key": REDACTED}
    assert scrubbed["contexts"]["response"]["headers"] == [["Authorization", REDACTED], ["X-Trace", "t-1"]]
    crumbs = scrubbed["breadcrumbs"]["values"]
    assert crumbs[0]["data"] == {"token": REDACTED, "attempt": 1}
    assert crumbs[2]["message"] == f"used {REDACTED} for #ops"
    frame = scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert frame["vars"]["attempt"] == "1"
    assert frame["vars"]["token"] == REDACTED
    assert "https://x" in frame["vars"]["p"]
    assert scrubbed["exception"]["values"][0]["type"] == "ActionFailed"


def test_scrub_covers_transactions_too(slack_token):
    transaction = {"type": "transaction", "transaction": "opsq.execute_action",
                   "spans": [{"op": "http.client", "description": "POST https://x?token=qs-token-7",
                              "data": {"Authorization": "Bearer s3cr3t-token", "note": "xoxb-super-secret-123"}}]}
    text = json.dumps(sentry.scrub(transaction, {}))
    for secret in ("qs-token-7", "s3cr3t-token", "xoxb-super-secret-123"):
        assert secret not in text


def test_scrub_text():
    secrets = ("tok-123456",)
    assert redaction.scrub_text("Authorization: Bearer abc.def", secrets) == f"Authorization: {REDACTED}"
    assert redaction.scrub_text("sent Bearer abc.def to x", secrets) == f"sent Bearer {REDACTED} to x"
    assert redaction.scrub_text("uses tok-123456 now", secrets) == f"uses {REDACTED} now"
    assert redaction.scrub_text('{"password": "p w", "a": 1}', secrets) == f'{{"password": "{REDACTED}", "a": 1}}'
    assert redaction.scrub_text("client_secret=abc&x=1", secrets) == f"client_secret={REDACTED}&x=1"
    # Ordinary messages are left alone.
    for text in ("w1@host ready.", "already done; returning the stored result", "waiting 0.52s (rate_limited)",
                 "token bucket empty", "attempt 2/4 failed (HTTP 503), retrying in 0.40s"):
        assert redaction.scrub_text(text, secrets) == text


def test_short_tokens_are_not_searched_for_in_text(monkeypatch):
    monkeypatch.setenv("OPSQ_NOTION_TOKEN", "abc")
    monkeypatch.setenv("OPSQ_TRELLO_TOKEN", "trello-long-token")
    reload_settings()
    secrets = redaction.configured_secrets()
    assert "abc" not in secrets and "trello-long-token" in secrets
    assert redaction.scrub_text("abc trello-long-token") == f"abc {REDACTED}"


def test_before_send_drops_the_failure_log_line_that_duplicates_the_task_exception():
    record = logging.LogRecord("opsq.action", logging.ERROR, __file__, 1, "action failed for good", None, None)
    assert sentry.before_send({"message": "x"}, {"log_record": record}) is None
    try:
        raise ValueError("boom")
    except ValueError:
        crashed = logging.LogRecord("opsq.action", logging.ERROR, __file__, 1, "action crashed and failed for good",
                                    None, sys.exc_info())
        bookkeeping = logging.LogRecord("opsq.action", logging.ERROR, __file__, 1, "recording the outcome failed",
                                        None, sys.exc_info())
    # A failure line, a crash's (with its traceback) or a compensation's, is reported with the task's exception
    # (failures_reported), not as a log event besides.
    crashed.__dict__[sentry.FAILURE_LINE] = True
    assert sentry.before_send({"message": "x"}, {"log_record": crashed}) is None
    compensation = logging.LogRecord("opsq.workflow", logging.ERROR, __file__, 1, "compensation failed for good",
                                     None, None)
    compensation.__dict__[sentry.FAILURE_LINE] = True
    assert sentry.before_send({"message": "x"}, {"log_record": compensation}) is None
    # Another error with a traceback is an event.
    assert sentry.before_send({"message": "x"}, {"log_record": bookkeeping}) == {"message": "x"}
    other = logging.LogRecord("opsq.workflow", logging.ERROR, __file__, 1, "password=x", None, None)
    assert sentry.before_send({"message": "password=x"}, {"log_record": other}) == {"message": f"password={REDACTED}"}


def test_task_tags_from_execute_action_and_workflow_tasks():
    app = Celery("t", set_as_current=False)

    @app.task(name="opsq.execute_action", bind=True)
    def execute_action(self, *, action_id, platform, action, params, max_attempts, attempt=1, step=None):
        return None

    @app.task(name="opsq.workflow.step_failed")
    def step_failed(request, exc, traceback, workflow_id, step_id):
        return None

    tags = sentry.task_tags(execute_action, (), {"action_id": "a1", "platform": "slack", "action": "send_message",
                                              "params": {}, "max_attempts": 3,
                                              "step": {"workflow_id": "wf1", "step_id": "notify"}})
    assert tags == {"platform": "slack", "action": "send_message", "action_id": "a1", "workflow_id": "wf1",
                    "step_id": "notify"}
    assert sentry.task_tags(step_failed, ("req", "exc", "tb", "wf2", "s2"), {}) == {"workflow_id": "wf2",
                                                                                 "step_id": "s2"}
    assert sentry._is_opsq_task("opsq.workflow.rollback") and not sentry._is_opsq_task("celery.backend_cleanup")


def _record(msg: str, args: tuple = (), **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("opsq.action", logging.WARNING, __file__, 10, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_json_formatter_one_object_per_line_with_the_action_ids(slack_token):
    fmt = logs.JsonFormatter()
    line = fmt.format(_record("attempt %d/%d failed (%s)\nnext line", (1, 4, "HTTP 503"), action_id="a1",
                              platform="slack", action="send_message", attempt=1, workflow_id="wf", step_id="s1"))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "WARNING" and doc["logger"] == "opsq.action"
    assert doc["message"] == "attempt 1/4 failed (HTTP 503)\nnext line"
    assert {k: doc[k] for k in logs.LOG_FIELDS} == {"action_id": "a1", "platform": "slack", "action": "send_message",
                                                   "attempt": 1, "workflow_id": "wf", "step_id": "s1"}
    assert doc["time"].endswith("+00:00")
    assert "task_id" not in doc

    # Secrets leave the message and the traceback.
    try:
        raise RuntimeError("rejected Bearer s3cr3t-token")
    except RuntimeError:
        record = _record("calling with %s and token %s", ("Bearer s3cr3t-token", "xoxb-super-secret-123"))
        record.exc_info = sys.exc_info()
    line = fmt.format(record)
    assert "s3cr3t-token" not in line and "xoxb-super-secret-123" not in line
    doc = json.loads(line)
    assert doc["message"] == f"calling with Bearer {REDACTED} and token {REDACTED}"
    assert "RuntimeError: rejected Bearer [redacted]" in doc["exc_info"]


def test_json_formatter_adds_the_running_task(slack_token):
    app = Celery("t", set_as_current=False)
    app.conf.task_always_eager = True
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("opsq.test.observability")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logs.configure_handlers(logger, "json")
    assert isinstance(handler.formatter, logs.JsonFormatter)

    @app.task(name="opsq.execute_action")
    def run() -> None:
        logger.info("inside with %s", "Bearer s3cr3t-token", extra={"action_id": "a9"})

    try:
        run.apply(task_id="tid-1")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["task_id"] == "tid-1" and inside["task_name"] == "opsq.execute_action"
    assert inside["action_id"] == "a9"
    assert inside["message"] == f"inside with Bearer {REDACTED}"
    assert "task_id" not in outside


def test_text_format_keeps_the_formatter_and_redacts():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger = logging.getLogger("opsq.test.observability.text")
    logger.addHandler(handler)
    logger.propagate = False
    logs.configure_handlers(logger, "text")
    logs.configure_handlers(logger, "text")  # twice (Celery sets up logging again in some children): no double wrap
    assert isinstance(handler.formatter, logs.RedactingFormatter)
    assert not isinstance(handler.formatter.inner, logs.RedactingFormatter)
    assert sum(isinstance(f, logs.RedactFilter) for f in handler.filters) == 1
    try:
        logger.warning("w1@host ready.")
        logger.warning("sent %s", "Authorization: Bearer abc")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["[WARNING] w1@host ready.", f"[WARNING] sent Authorization: {REDACTED}"]


def test_settings(monkeypatch):
    for key in ("OPSQ_SENTRY_DSN", "OPSQ_LOG_FORMAT", "OPSQ_FLOWER_PORT", "OPSQ_FLOWER_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    settings = config.ObservabilitySettings()
    assert settings.dsn is None and settings.log_format == "json"
    assert settings.flower_port == 5555 and settings.flower_address == "0.0.0.0"
    monkeypatch.setenv("OPSQ_SENTRY_DSN", "  ")
    monkeypatch.setenv("OPSQ_LOG_FORMAT", "TEXT")
    settings = config.ObservabilitySettings()
    assert settings.dsn is None and settings.log_format == "text"
    monkeypatch.setenv("OPSQ_LOG_FORMAT", "xml")
    assert logs._log_format() == "json"  # a bad value falls back (with a warning), it does not stop the worker
    assert config.ObservabilitySettings().dsn is None  # nor does it break the other settings
    monkeypatch.setenv("OPSQ_LOG_FORMAT", "text")
    assert logs._log_format() == "text"
    assert sentry.init_sentry(config.ObservabilitySettings(sentry_dsn=None)) is False


SENTRY_ON = """
import os, sys
os.environ['OPSQ_SENTRY_DSN'] = 'http://key@127.0.0.1:9/1'
from workers.observability import sentry
print('sentry_sdk' in sys.modules, sentry.sentry_on())
sentry.init_sentry()
print(sentry.sentry_on() is sys.modules['sentry_sdk'])
"""


def test_sentry_sdk_is_loaded_by_init_with_a_dsn_and_then_sentry_on_answers_it():
    # In a process of its own: init patches Celery for good.
    result = subprocess.run([sys.executable, "-c", SENTRY_ON], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "None", "True"]


@pytest.fixture
def sentry_events():
    """A real sentry_sdk client whose transport keeps the events (no network), scrubbed by our before_send;
    inactive again afterwards."""
    import sentry_sdk  # noqa: PLC0415
    from sentry_sdk.transport import Transport  # noqa: PLC0415

    events: list[dict] = []

    class Keep(Transport):
        def capture_envelope(self, envelope):  # type: ignore[no-untyped-def]
            events.extend(item.payload.json for item in envelope.items if item.type == "event")

    sentry_sdk.init(dsn="http://key@127.0.0.1:9/1", transport=Keep(), before_send=sentry.before_send,
                    default_integrations=False, auto_enabling_integrations=False)  # patches nothing
    yield events
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)  # no client, as before
    assert sentry.sentry_on() is None


def test_failures_reported_sends_a_failure_for_good_once_and_nothing_else(sentry_events):
    from celery.exceptions import Retry  # noqa: PLC0415

    from workers.errors import ActionFailed  # noqa: PLC0415

    with pytest.raises(ActionFailed), sentry.failures_reported():
        raise ActionFailed("auth", "slack: not_authed")
    (event,) = sentry_events
    (exc,) = event["exception"]["values"]
    assert exc["type"] == "ActionFailed" and exc["value"] == "slack: not_authed"
    assert exc["mechanism"] == {"type": "celery", "handled": False}

    # A redelivery finding the failure recorded, a retry, a crash (the Celery integration's, not ours): nothing.
    with pytest.raises(ActionFailed), sentry.failures_reported():
        raise ActionFailed("auth", "slack: not_authed", repeat=True)
    with pytest.raises(Retry), sentry.failures_reported():
        raise Retry("again")
    with pytest.raises(KeyError), sentry.failures_reported():
        raise KeyError("bug")
    assert len(sentry_events) == 1


def test_failures_reported_without_sentry_only_reraises():
    from workers.errors import ActionFailed  # noqa: PLC0415

    assert sentry.sentry_on() is None
    with pytest.raises(ActionFailed), sentry.failures_reported():
        raise ActionFailed("auth", "x")
