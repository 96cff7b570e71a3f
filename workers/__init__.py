"""opsqueue's runtime: Celery app, the action task, guards, state store, client API and CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.client import ActionHandle

__all__ = ["ActionHandle", "submit_action"]


def submit_action(*args: Any, **kwargs: Any) -> ActionHandle:
    # Imported lazily: importing the package must not connect to (or require) a broker.
    from workers.client import submit_action as _submit

    return _submit(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "ActionHandle":
        from workers.client import ActionHandle

        return ActionHandle
    raise AttributeError(name)
