"""The README's "Five minutes by hand", typed literally: its shell blocks are read from README.md (so the
README and this test cannot drift), each line run by bash with the `opsq` of the venv that runs the tests,
`opsq dev` in the background as shell 1, the export lines it prints pasted into shell 2. Each command's exit
status and key output are checked, and `opsq dev` must stop on Ctrl-C leaving no process behind.

The one thing not literal: `opsq dev` gets the tests' Redis and a fresh SQLite file through OPSQ_REDIS_URL
and OPSQ_DATABASE_URL (which it honours, and passes on in its export lines), so shell 2 reaches them only
through what it pasted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import Background, descendants

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECTION = "### Five minutes by hand"
PLACEHOLDER = re.compile(r"<([A-Z-]+)>")
READY = "Ctrl-C stops"


def walkthrough_blocks() -> list[list[str]]:
    """The ```sh blocks of the README's walk-through section, each a list of its lines."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n### ", start + len(SECTION))
    section = text[start:end if end != -1 else None]
    return [block.strip("\n").splitlines() for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]


def _check_submit(out: str, found: dict[str, str]) -> None:
    assert re.search(r"^status\s+succeeded", out, re.MULTILINE), out


def _check_workflow_run(out: str, found: dict[str, str]) -> None:
    assert "offboarding  awaiting_approval" in out, out
    # It names the approval and the command that gives it.
    match = re.search(r"^approval (\w+) waits for step\(s\) announce", out, re.MULTILINE)
    assert match, out
    assert f"opsq approvals approve {match.group(1)} --actor" in out, out
    found["APPROVAL-ID"] = match.group(1)
    found["WORKFLOW-ID"] = re.search(r"^workflow (\w+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]


def _check_approve(out: str, found: dict[str, str]) -> None:
    assert f"approved {found['APPROVAL-ID']}: workflow {found['WORKFLOW-ID']} resumes" in out, out
    assert f"workflow {found['WORKFLOW-ID']}  offboarding  succeeded" in out, out


def _check_metrics(out: str, found: dict[str, str]) -> None:
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    # slack: the submit and the announcement; gdrive the checklist; notion the access request. All succeeded.
    assert rows["slack"][1:4] == ["2", "2", "0"], out
    assert rows["gdrive"][1:4] == ["1", "1", "0"] and rows["notion"][1:4] == ["1", "1", "0"], out


#: What each command of the walk-through must do: a command the README adds needs its entry here.
EXPECTED: dict[str, Callable[[str, dict[str, str]], None]] = {
    "opsq submit slack send_message": _check_submit,
    "opsq workflow run docs/examples/approval-gates.yaml": _check_workflow_run,
    "opsq approvals approve": _check_approve,
    "opsq metrics": _check_metrics,
}


class Shell:
    """One shell of the walk-through: an environment that `. .venv/bin/activate` and `export` change."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def activate(self) -> None:
        # The venv that runs these tests stands for the checkout's .venv (a fresh clone's `make install`).
        venv_bin = Path(sys.executable).parent
        assert (venv_bin / "opsq").exists(), f"no opsq next to {sys.executable}"
        self.env["PATH"] = f"{venv_bin}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["VIRTUAL_ENV"] = str(venv_bin.parent)

    def run(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", line], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture
def clean_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A newcomer's shell: no OPSQ_ setting, a home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSQ_", "VIRTUAL_ENV"))}
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    yield env


def test_the_readme_walkthrough_works_when_typed_literally(redis_client, redis_url, tmp_path, clean_env):
    blocks = walkthrough_blocks()
    assert len(blocks) == 2, f"the walk-through has a block per shell, found {blocks}"
    first, second = blocks
    assert first == [". .venv/bin/activate", "opsq dev"], first

    shell1 = Shell({**clean_env, "OPSQ_REDIS_URL": redis_url,
                    "OPSQ_DATABASE_URL": f"sqlite:///{tmp_path / 'walkthrough.db'}", "PYTHONUNBUFFERED": "1"})
    shell1.activate()
    dev = Background(subprocess.Popen(["bash", "-c", "exec opsq dev"], env=shell1.env, cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        printed = dev.until(READY)
        exports = [line.strip() for line in printed if line.strip().startswith("export OPSQ_")]
        names = {line.split("=", 1)[0].removeprefix("export ") for line in exports}
        assert {"OPSQ_REDIS_URL", "OPSQ_DATABASE_URL", "OPSQ_PLATFORM_BASE_URL", "OPSQ_SLACK_TOKEN",
                "OPSQ_GDRIVE_TOKEN", "OPSQ_NOTION_TOKEN"} <= names, printed
        assert f"export OPSQ_REDIS_URL={redis_url}" in exports  # it honours the setting and passes it on
        processes = descendants(dev.process.pid)
        assert len(processes) >= 3, processes  # the worker, its pool, beat

        shell2 = Shell(dict(clean_env))
        found: dict[str, str] = {}
        pasted = ran = 0
        for line in second:
            if line.startswith("#"):
                if "paste the export lines" in line:
                    for export in exports:
                        name, value = export.removeprefix("export ").split("=", 1)
                        shell2.env[name] = shell2.run(f"printf %s {value}").stdout  # as bash reads it
                    pasted += 1
                continue
            if line == ". .venv/bin/activate":
                shell2.activate()
                continue
            command = PLACEHOLDER.sub(lambda m: found[m.group(1)], line)
            check = next((c for prefix, c in EXPECTED.items() if command.startswith(prefix)), None)
            assert check is not None, f"the README's walk-through runs {line!r}: say here what it must do"
            result = shell2.run(command)
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
            assert "Traceback" not in result.stderr, result.stderr
            check(result.stdout, found)
            ran += 1
        assert pasted == 1 and ran == len(EXPECTED), (pasted, ran)
    finally:
        dev.stop_leaving_nothing(signal.SIGINT, processes)  # Ctrl-C, as the README says
