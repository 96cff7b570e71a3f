"""Worker memory hygiene (issue 10, item 8) with a real worker: a pool process is replaced after
OPSQ_WORKER_MAX_TASKS_PER_CHILD tasks, or once it has grown past OPSQ_WORKER_MAX_MEMORY_PER_CHILD_KIB, and
the actions it would have run next still run. Celery names each new pool process ForkPoolWorker-<n>, n counting
up, so the names in the log say how many processes ran the actions."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.wait import wait_for
from workers.client import submit_action

pytestmark = pytest.mark.integration


def _processes_that_ran(log: str) -> list[str]:
    names = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if re.search(r"opsq\.execute_action\[.*\] succeeded", str(record.get("message"))):
            names.append(record.get("process"))
    return names


@pytest.mark.parametrize(("setting", "value", "runs", "expected"), [
    ("OPSQ_WORKER_MAX_TASKS_PER_CHILD", "3", 7, 3),  # 3 + 3 + 1
    ("OPSQ_WORKER_MAX_MEMORY_PER_CHILD_KIB", "1024", 4, 4),  # every process is past 1 MiB after its first task
])
def test_pool_processes_are_recycled(opsq_env_sqlite, workers_started, setting, value, runs, expected):
    env = opsq_env_sqlite(**{setting: value})
    worker = workers_started(env, queues="noop", concurrency=1)
    for i in range(runs):
        assert submit_action("noop", "noop", {"echo": i}).wait(30).status == "succeeded"
    # A wait returns as the attempt settles, before Celery logs the task's end: wait for that line too.
    ran = wait_for(lambda: (names := _processes_that_ran(worker.log_path.read_text())) and len(names) == runs
                   and names, timeout=10, what=f"{runs} 'succeeded' lines in the worker's log")
    assert len(set(ran)) == expected, ran
    assert worker.proc is not None and worker.proc.poll() is None  # the worker itself stays
