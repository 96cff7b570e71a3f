"""workers.status and workflows.status: StrEnums whose members equal the strings stored in the database,
written in JSON and typed in the CLI — so the vocabularies below must not change without a migration."""

from __future__ import annotations

import json
from enum import StrEnum

import pytest

from executors import errors as executor_errors
from workers.guards import Admission
from workers.status import (
    FINAL_ACTION_STATUSES,
    OPEN_ACTION_STATUSES,
    ActionStatus,
    ErrorKind,
    Verdict,
    is_dead_lettered,
)
from workflows.status import ApprovalStatus, CompensationStatus, StepStatus, WorkflowStatus

VOCABULARIES: list[tuple[type[StrEnum], list[str]]] = [
    (ActionStatus, ["scheduled", "queued", "running", "retrying", "succeeded", "failed", "skipped", "cancelled",
                    "expired"]),
    (Verdict, ["run", "done", "failed", "busy", "open", "half_open_busy", "rate_limited", "open_fail",
               "unreplicated", "concurrency_limited", "cancelled", "expired"]),
    (ErrorKind, ["retryable", "permanent", "auth", "invalid_params", "template", "internal", "rate_limited",
                 "circuit_open", "stuck", "purged"]),
    (WorkflowStatus, ["pending", "running", "awaiting_approval", "succeeded", "failed", "rolling_back",
                      "rolled_back", "rollback_failed", "resolved", "cancelling", "cancelled"]),
    (StepStatus, ["pending", "queued", "running", "succeeded", "failed", "skipped"]),
    (CompensationStatus, ["pending", "running", "done", "failed", "skipped"]),
    (ApprovalStatus, ["pending", "approved", "denied", "expired"]),
]


@pytest.mark.parametrize(("enum", "values"), VOCABULARIES, ids=[v[0].__name__ for v in VOCABULARIES])
def test_each_member_is_its_stored_string(enum, values):
    assert [m.value for m in enum] == values
    for member in enum:
        assert member == member.value and str(member) == member.value and f"{member}" == member.value
        assert enum(member.value) is member and member.name == member.value.upper()
        assert hash(member) == hash(member.value)  # usable as a dict key in place of the string
    assert json.dumps(list(enum)) == json.dumps(values)
    with pytest.raises(ValueError, match="is not a valid"):
        enum("no-such-status")


def test_final_and_open_action_statuses_split_what_is_stored():
    assert {"succeeded", "failed", "skipped", "cancelled", "expired"} == FINAL_ACTION_STATUSES
    assert {"queued", "retrying"} == OPEN_ACTION_STATUSES
    # `running` is never stored (it is read from the live lease in Redis); `scheduled` has no message yet: neither
    # final nor open (the stuck detector, which looks at open actions, must not send it before it is due).
    assert set(ActionStatus) - FINAL_ACTION_STATUSES - OPEN_ACTION_STATUSES == {ActionStatus.RUNNING,
                                                                                 ActionStatus.SCHEDULED}
    assert "succeeded" in FINAL_ACTION_STATUSES and "queued" not in FINAL_ACTION_STATUSES  # plain strings work


def test_every_executor_error_kind_is_an_error_kind():
    kinds = {cls.kind for cls in vars(executor_errors).values()
             if isinstance(cls, type) and issubclass(cls, executor_errors.ExecutorError)
             and cls is not executor_errors.ExecutorError}
    assert kinds == {"retryable", "rate_limited", "permanent", "invalid_params", "auth"}
    assert kinds <= set(ErrorKind)


def test_an_admission_runs_only_on_the_run_verdict():
    assert Admission().verdict == Verdict.RUN and Admission().run
    assert [v for v in Verdict if Admission(verdict=v).run] == [Verdict.RUN]


DEAD_LETTER_POLICY = [
    ("retryable", True),  # retries ran out: later may work
    ("rate_limited", True),
    ("auth", True),  # replay once the credentials are fixed
    ("internal", True),  # replay after the fix
    ("circuit_open", True),
    ("stuck", True),
    ("permanent", False),  # the same params would fail the same way
    ("invalid_params", False),
    ("template", False),
    ("purged", False),  # an operator dropped it on purpose
    (None, False),  # a kind the rule does not name is not dead-lettered
    ("some_future_kind", False),
]


@pytest.mark.parametrize(("kind", "dead"), DEAD_LETTER_POLICY)
def test_what_goes_to_the_dead_letters(kind, dead):
    assert is_dead_lettered(kind, step=False) is dead
    assert is_dead_lettered(kind, step=True) is False  # a workflow's step: its workflow rolls back instead


def test_the_policy_above_decides_every_error_kind():
    # A new kind of failure needs a line in DEAD_LETTER_POLICY: whether an operator can replay it.
    assert set(ErrorKind) <= {kind for kind, _ in DEAD_LETTER_POLICY}
