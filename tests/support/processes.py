"""The processes a command started, from /proc (Linux): to show that it stops every one of them."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path


def descendants(pid: int) -> dict[int, str]:
    """pid -> its start time (so a reused pid is not taken for it), for every process below `pid`."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(child)
        started[child] = fields[19]
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = started[child]
            todo.append(child)
    return found


def alive(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


class Background:
    """A command left running (`opsq dev`): its output read line by line on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def until(self, marker: str, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.seen):
            left = deadline - time.monotonic()
            if left <= 0 or (self.process.poll() is not None and self.lines.empty()):
                raise AssertionError(f"`opsq dev` never printed {marker!r}; it printed:\n{''.join(self.seen)}")
            try:
                self.seen.append(self.lines.get(timeout=min(left, 1)))
            except queue.Empty:
                continue
        return self.seen

    def stop_leaving_nothing(self, sig: int, processes: dict[int, str]) -> None:
        """Send `sig` (SIGINT as Ctrl-C, SIGTERM as a service manager), then show that the command ended cleanly
        and that none of `processes` (its descendants, read while it ran) is left; any left is killed, so a
        failure here leaves nothing behind either."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.returncode == 0, "".join(self.seen)
        left = [pid for pid, started in processes.items() if alive(pid, started)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert left == [], f"`opsq dev` left processes running: {left}"
        assert "opsq dev stopped" in "".join(self.until("opsq dev stopped", timeout=10))
