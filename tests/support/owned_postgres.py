"""A PostgreSQL cluster the test owns (initdb into its own directory, a free port): stopped and started under
load without touching the machine's shared server. The server refuses to run as root, so it runs as the
`postgres` user when the tests run as root."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from tests.support.redis_server import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name)
                                                                       else [])
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: this fault test needs a real server")
    return str(found[-1])


class OwnedPostgres:
    def __init__(self, directory: Path, settings: dict[str, str] | None = None) -> None:
        self.dir = directory
        self.settings = settings or {}
        self.data = directory / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr or done.stdout}")

    def create(self) -> OwnedPostgres:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        return self.start()

    def start(self) -> OwnedPostgres:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
                  + "".join(f" -c {name}={value}" for name, value in self.settings.items()), "start")
        return self

    def stop(self) -> None:
        """An immediate stop: every connection cut, as when the server's host goes away."""
        if (self.data / "postmaster.pid").exists():
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
