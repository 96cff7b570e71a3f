"""Memory of a process and its children, read from /proc (Linux only): what the worker-memory benchmark prints.

RSS counts every page a process has mapped in memory, shared or not: the figure `ps`, `top` and Celery's
worker_max_memory_per_child see. Prefork pool processes share most pages with their parent (fork is
copy-on-write), so RSS counts those pages once per process; PSS divides each shared page among the
processes sharing it, and USS (private pages only) is what ending that one process would give back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.perf.cpu import stat_lines


def available() -> bool:
    return Path("/proc/self/smaps_rollup").exists()


@dataclass(frozen=True)
class Memory:
    """KiB, as /proc reports them."""

    rss: int
    pss: int
    uss: int

    def __str__(self) -> str:
        return f"RSS {self.rss / 1024:6.1f} MiB  PSS {self.pss / 1024:6.1f} MiB  USS {self.uss / 1024:6.1f} MiB"


def memory(pid: int) -> Memory:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            fields[name] = int(value[0])
    return Memory(rss=fields["Rss"], pss=fields["Pss"],
                  uss=fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0))


def children(pid: int) -> list[int]:
    """The direct children of pid (a prefork worker's pool processes), oldest first. From each process's
    stat line: /proc/<pid>/task/<tid>/children needs a kernel option not every kernel has."""
    return sorted(child for child, raw in stat_lines() if int(raw[raw.rindex(")") + 2:].split()[1]) == pid)
