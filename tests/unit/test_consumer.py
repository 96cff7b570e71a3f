"""workers.consumer's checks (pure) and the quarantine's requeue rules (workers.ops.quarantine), on fakeredis.
The worker itself is exercised with real processes in tests/faults/test_poison_messages.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workers.consumer import EXECUTE_ACTION, MessageCheck, Unrunnable
from workers.ops import quarantine
from workers.tasks import execute_action

GOOD = {"action_id": "a1", "platform": "noop", "action": "noop", "params": {"echo": 1}, "max_attempts": 3,
        "idempotency_key": None, "fail_fast": False}


def check(body: Any, *, task: str = EXECUTE_ACTION, headers: Any = None, content_type: str = "application/json",
          limit: int = 1_048_576) -> str:
    checker = MessageCheck({EXECUTE_ACTION: execute_action}, {"application/json"}, limit)
    hdrs = {"task": task, "id": "t1"} if headers is None else headers
    return checker.check(hdrs, content_type, len(json.dumps(body)), lambda: body)


def reason(body: Any, **kw: Any) -> tuple[str, bool]:
    with pytest.raises(Unrunnable) as caught:
        check(body, **kw)
    return caught.value.reason, caught.value.requeueable


def test_a_well_formed_execute_action_passes():
    assert check([[], GOOD, {}]) == EXECUTE_ACTION
    assert check([[], {**GOOD, "attempt": 2, "step": {"workflow_id": "w", "step_id": "s"}}, {}]) == EXECUTE_ACTION


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({k: v for k, v in GOOD.items() if k != "params"}, "arguments that do not fit opsq.execute_action"),
    ({**GOOD, "surprise": 1}, "arguments that do not fit opsq.execute_action"),
    ({**GOOD, "params": "a string"}, "arguments of the wrong type for opsq.execute_action: params (dict_type)"),
    ({**GOOD, "max_attempts": "5"}, "max_attempts (int_type)"),
    ({**GOOD, "fail_fast": "no"}, "fail_fast (bool_type)"),
])
def test_arguments_that_do_not_fit_are_refused_naming_the_field_not_the_value(kwargs, expected):
    why, requeueable = reason([[], kwargs, {}])
    assert expected in why and requeueable  # a newer worker may take them (a rolling upgrade)
    assert "a string" not in why


def test_positional_arguments_do_not_fit_a_keyword_only_task():
    assert "do not fit" in reason([["a1"], GOOD, {}])[0]


@pytest.mark.parametrize(("body", "kw", "expected", "requeueable"), [
    ([[], GOOD, {}], {"headers": {"id": "t1"}}, "no task header", False),
    ([[], GOOD, {}], {"headers": ["task"]}, "no task header", False),
    ([[], GOOD, {}], {"content_type": "application/x-python-serialize"}, "is not accepted (JSON only)", False),
    ([[], GOOD, {}], {"task": "opsq.nope"}, "unknown task 'opsq.nope'", True),
    ({"a": 1}, {}, "not Celery's [args, kwargs, embed]", False),
    ([[], [1], {}], {}, "not Celery's [args, kwargs, embed]", False),
    ([[], {**GOOD, "params": {"blob": "x" * 5000}}, {}], {"limit": 4096}, "(OPSQ_MAX_PARAMS_BYTES)", True),
])
def test_messages_that_cannot_run_say_why(body, kw, expected, requeueable):
    why, can = reason(body, **kw)
    assert expected in why and can is requeueable


def test_a_body_that_does_not_decode_is_refused():
    checker = MessageCheck({EXECUTE_ACTION: execute_action}, {"application/json"}, 1024)

    def decode() -> Any:
        raise ValueError("bad")

    with pytest.raises(Unrunnable, match=r"cannot be decoded \(ValueError\)"):
        checker.check({"task": EXECUTE_ACTION}, "application/json", 10, decode)


def _message(priority: int = 6) -> str:
    return json.dumps({"body": "W10=", "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": {"task": EXECUTE_ACTION, "id": "a1"},
                       "properties": {"priority": priority, "body_encoding": "base64", "delivery_tag": "t",
                                      "delivery_info": {"exchange": "", "routing_key": "noop"}}})


def _record(**over: Any) -> dict[str, Any]:
    return {"at": 0, "queue": "noop", "reason": "unknown task", "bytes": 10, "head": "", "truncated": False,
            "stage": "consumer", "task": EXECUTE_ACTION, "id": "a1", "requeueable": True, "message": _message(),
            **over}


@pytest.mark.parametrize(("record", "expected"), [
    ({"queue": "noop", "reason": "not JSON (JSONDecodeError)", "bytes": 3, "head": ""}, "it is not a message"),
    (_record(requeueable=False), "no worker can run it"),
    ({k: v for k, v in _record(requeueable=False).items() if k != "message"}, "too large to keep whole"),
    (_record(message="[1]"), "it is not a message"),
])
def test_only_whole_valid_messages_can_be_requeued(record, expected):
    assert expected in (quarantine.why_not_requeueable(record) or "")
    assert quarantine.why_not_requeueable(_record()) is None


@pytest.mark.parametrize(("priority", "key"), [(0, "noop"), (6, "noop\x06\x166"), (9, "noop\x06\x169"),
                                               (4, "noop\x06\x163"), (42, "noop\x06\x169")])
def test_a_message_goes_back_to_its_priority_list(priority, key):
    assert quarantine.queue_key("noop", json.loads(_message(priority))) == key
