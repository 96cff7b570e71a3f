"""The benchmark's baseline: a plain Celery task in the same app, same broker, same worker settings."""

from __future__ import annotations

from typing import Any

from workers.celery_app import app

__all__ = ["app", "plain_noop"]


@app.task(name="bench.plain_noop", acks_late=True)
def plain_noop(**kwargs: Any) -> dict[str, Any]:
    return {"ok": True, "echo": kwargs.get("echo")}
