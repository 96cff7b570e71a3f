"""Running the `opsq` CLI as an operator does: a subprocess with the given environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])


def opsq(env, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
