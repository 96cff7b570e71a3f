"""The seam through which a higher layer (workflows) follows the actions that are its steps.

execute_action knows nothing of workflows: when a message carries a `step` context, it asks the
registered hooks to prepare the params (templates), and tells them how the attempt ended.
"""

from __future__ import annotations

from typing import Any, Protocol


class StepHooks(Protocol):
    def begin(self, step: dict[str, Any], params: dict[str, Any], attempt: int) -> dict[str, Any] | None:
        """The params to run with (templates rendered), the step claimed for this attempt; None: the step
        must not run (its workflow is rolling back or finished, or a rollback skipped it). A template that
        finds nothing raises ValueError."""

    def succeeded(self, step: dict[str, Any], params: dict[str, Any], result: dict[str, Any],
                  action_row: dict[str, Any] | None = None) -> None:
        """Records the step's success, with `action_row` (its action's success record,
        workers.store.actions.succeeded_row) in the same transaction."""

    def failed(self, step: dict[str, Any], kind: str, message: str) -> None: ...


_hooks: StepHooks | None = None


def register(hooks: StepHooks) -> None:
    global _hooks
    _hooks = hooks


def get() -> StepHooks | None:
    return _hooks
