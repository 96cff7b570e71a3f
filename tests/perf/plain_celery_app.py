"""A truly plain Celery app: the worker-memory benchmark's baseline (tests/perf/test_worker_memory_bench.py).

Nothing of opsqueue is imported, so a worker of this app holds only what Celery, kombu and redis-py bring:
`celery -A tests.perf.plain_celery_app worker`. The broker and the result backend are the same Redis as
opsqueue's side (PLAIN_CELERY_REDIS_URL, set by the benchmark); the settings a user of Celery with Redis
would set for reliable work (JSON, acks_late, prefetch 1), so both workers do comparable work per task."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery


def make_app(url: str) -> Celery:
    """The worker's app, and the benchmark's client for it (which must not read the environment)."""
    app = Celery("plain", broker=url, backend=url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue="plain",
        broker_connection_retry_on_startup=True,
    )

    # Not shared: a shared task is given to every app made in the process (the benchmark's client too).
    @app.task(name="plain.noop", shared=False)
    def noop(**kwargs: Any) -> dict[str, Any]:
        return {"ok": True, "echo": kwargs.get("echo")}

    return app


app = make_app(os.environ.get("PLAIN_CELERY_REDIS_URL", "redis://127.0.0.1:6379/0"))
