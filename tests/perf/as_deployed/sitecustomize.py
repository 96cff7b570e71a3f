"""On a worker's PYTHONPATH (OPSQ_BENCH_AS_DEPLOYED=1, tests/perf/test_worker_memory_bench.py): the packages the
development environment has and the deployed one does not, hidden, so the benchmark measures the worker as the
Docker image runs it. rich and pygments come with the test tools (import-linter, pytest), not with opsqueue or
Celery; httpx (its command-line client) and Celery (colours in its CLI) import them only when they are there."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

HIDDEN = ("rich", "pygments")


class _Hide:
    @staticmethod
    def find_spec(name: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Hide())
