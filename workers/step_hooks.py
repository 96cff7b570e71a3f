"""The seam through which a higher layer (workflows) follows the actions that are its steps.

execute_action knows nothing of workflows: when a message carries a `step` context, it asks the
registered hooks to prepare the params (templates), and tells them how the attempt ended.
"""

from __future__ import annotations

from typing import Any, Protocol


class StepHooks(Protocol):
    def prepare(self, step: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
        """The params to run with (templates rendered), or None: the step must not run (its workflow
        is rolling back or finished)."""

    def started(self, step: dict[str, Any], attempt: int) -> bool:
        """Claim the step for this attempt; False: it must not run (skipped by a rollback)."""

    def succeeded(self, step: dict[str, Any], params: dict[str, Any], result: dict[str, Any]) -> None: ...

    def failed(self, step: dict[str, Any], kind: str, message: str) -> None: ...


_hooks: StepHooks | None = None


def register(hooks: StepHooks) -> None:
    global _hooks
    _hooks = hooks


def get() -> StepHooks | None:
    return _hooks
