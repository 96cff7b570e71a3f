"""CPU time per process group, read from /proc: where a benchmark's CPU went (Linux only).

The benchmark shares two cores between the client, the worker, Redis and the database; a ratio alone
does not say which of them an extra cost landed on, this does."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> bool:
    return Path("/proc/self/stat").exists()


def stat_lines() -> Iterator[tuple[int, str]]:
    """(pid, /proc/<pid>/stat) of every process still there while it is read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "stat").read_text()
        except OSError:
            continue


def snapshot(worker_pgid: int | None) -> Counter[str]:
    """CPU seconds so far by group: client (this process), worker (its process group), redis, postgres."""
    out: Counter[str] = Counter()
    me = os.getpid()
    for pid, raw in stat_lines():
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        pgid, cpu = int(fields[2]), (int(fields[11]) + int(fields[12])) / _TICK
        if pid == me:
            out["client"] += cpu
        elif worker_pgid is not None and pgid == worker_pgid:
            out["worker"] += cpu
        elif name.startswith("redis-server"):
            out["redis"] += cpu
        elif name.startswith("postgres"):
            out["postgres"] += cpu
    return out


def per_action(before: Counter[str], after: Counter[str], n: int) -> dict[str, int]:
    """Microseconds of CPU per action in each group."""
    return {k: round((after[k] - before[k]) * 1e6 / n) for k in ("client", "worker", "redis", "postgres")}
