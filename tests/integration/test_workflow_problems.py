"""A workflow's problems, every one in one pass with its line (issue 16 item 5), as people meet them: `opsq
workflow validate` and `opsq workflow run` as subprocesses (one line a problem, exit 1, no traceback, nothing
stored) and `POST /v1/workflows` over real HTTP (a 422 listing the same problems). One implementation
(workflows.spec.check) behind the three."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.opsq_cli import opsq
from tests.support.api_server import ApiServer
from tests.unit.test_workflows_spec import SIX_PROBLEMS
from workers.store import api_tokens
from workflows import state

pytestmark = pytest.mark.integration

EXPECTED = [
    "line 6: step build: dependson: unknown key (did you mean 'depends_on'?)",
    "line 9: step deploy: unknown platform 'jenkins' (known: slack, notion, trello, gdrive, gsheets, webhook, noop)",
    "line 14: step announce: depends on itself",
    "line 16: step announce: channel: Input should be a valid string",
    "line 17: step announce: template {{ steps.deploy.output.url }} names step 'deploy', which is not upstream of "
    "this step",
    "line 22: step gate: approval: required is 2 but only 1 approver(s) are named",
]


@pytest.fixture
def six(tmp_path: Path) -> Path:
    path = tmp_path / "release.yaml"
    path.write_text(SIX_PROBLEMS)
    return path


@pytest.mark.parametrize("command", ["validate", "run"])
def test_the_cli_lists_every_problem_once_with_its_line(opsq_env_sqlite, six, command):
    env = opsq_env_sqlite()
    out = opsq(env, "workflow", command, str(six), "--input", "who=ops")
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    assert out.stderr.splitlines() == [f"invalid: {e}" for e in EXPECTED], out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("command", ["validate", "run"])
def test_malformed_yaml_is_one_line_with_pyyamls_line_and_column(opsq_env_sqlite, tmp_path, command):
    path = tmp_path / "broken.yaml"
    path.write_text("name: w\nsteps:\n  - id: a\n    params: {channel: '#c', text: x\n  - id: b\n")
    out = opsq(opsq_env_sqlite(), "workflow", command, str(path))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "invalid: line 5, column 7: not valid YAML: expected ',' or '}', but got ':' (while parsing a flow mapping "
        "at line 4, column 13)"], out.stderr


def test_a_valid_file_says_so_and_its_shape(opsq_env_sqlite, tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(SIX_PROBLEMS.replace("dependson: [lint]", "depends_on: []").replace("jenkins", "noop")
                    .replace("action: run", "action: noop").replace("build, announce", "build, deploy")
                    .replace("channel: 42", "channel: '#ops'").replace("required: 2", "required: 1"))
    out = opsq(opsq_env_sqlite(), "workflow", "validate", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "release: valid, 4 steps: (build, deploy, gate) -> announce"


@pytest.fixture
def api(opsq_env_sqlite, tmp_path: Path) -> Iterator[tuple[ApiServer, str]]:
    env = opsq_env_sqlite()
    token = api_tokens.create("submit-bot", "submit", actor="test")
    server = ApiServer(env, tmp_path)
    yield server, token
    server.stop()


def test_the_api_answers_422_listing_the_same_problems_and_stores_nothing(api):
    server, token = api
    r = server.call("POST", "/v1/workflows", token, json={"spec": SIX_PROBLEMS})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "spec" and body["errors"] == EXPECTED
    assert body["error"] == "the workflow is invalid: " + "; ".join(EXPECTED)
    assert state.list_runs(limit=10) == []
    broken = server.call("POST", "/v1/workflows", token, json={"spec": "name: w\nsteps: [a\n"})
    assert broken.status_code == 422 and broken.json()["errors"] == [
        "line 3, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow "
        "sequence at line 2, column 8)"], broken.text
