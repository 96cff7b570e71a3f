"""opsqueue's runtime: Celery app, the action task, guards, state store, client API and CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.client import ActionHandle

__all__ = ["ActionHandle", "submit_action"]


def submit_action(*args: Any, **kwargs: Any) -> ActionHandle:
    # Lazily: `import workers.settings` (every process, the CLI's --help) must not load Celery and the store.
    from workers.client import submit_action as _submit  # noqa: PLC0415

    return _submit(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "ActionHandle":
        from workers.client import ActionHandle  # noqa: PLC0415 - lazily, as above

        return ActionHandle
    raise AttributeError(name)
