"""`opsq flower`: a real Flower process on the real broker, a real worker, over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.wait import wait_for
from tests.support.worker import ROOT
from workers.client import submit_action

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FlowerProcess:
    def __init__(self, env: dict[str, str], args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.cli.main", "flower", *args], cwd=ROOT,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, url: str, auth: tuple[str, str] | None, timeout: float = 30) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"flower exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return httpx.get(f"{url}/api/workers", auth=auth, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, "Flower to serve its API", interval=0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@pytest.fixture
def flowers():
    started: list[FlowerProcess] = []
    yield started
    for flower in started:
        flower.stop()


def test_flower_requires_auth_and_shows_workers_and_tasks(opsq_env_sqlite, workers_started, flowers, tmp_path):
    env = opsq_env_sqlite()
    worker = workers_started(env)
    port = free_port()
    password = f"pw-{uuid.uuid4().hex}"
    auth = ("ops", password)
    url = f"http://127.0.0.1:{port}"
    flower = FlowerProcess({**env, "OPSQ_FLOWER_USER": "ops", "OPSQ_FLOWER_PASSWORD": password},
                           ["--port", str(port)], tmp_path / "flower.log")
    flowers.append(flower)
    flower.wait_serving(url, auth)

    # No credentials, wrong credentials: 401, on the API and the UI alike.
    assert httpx.get(f"{url}/api/workers", timeout=5).status_code == 401
    assert httpx.get(f"{url}/api/tasks", timeout=5).status_code == 401
    assert httpx.get(f"{url}/workers", timeout=5).status_code == 401
    assert httpx.get(f"{url}/api/workers", auth=("ops", "wrong"), timeout=5).status_code == 401

    # Submitted after Flower is up, so its event consumer sees the task from received to succeeded.
    handle = submit_action("slack", "send_message", {"channel": "#a", "text": "hi"})
    assert handle.wait(30).status == "succeeded"

    def worker_listed() -> dict:
        workers = httpx.get(f"{url}/api/workers", params={"refresh": 1}, auth=auth, timeout=10).json()
        return workers if worker.name in workers else {}

    workers = wait_for(worker_listed, 30, f"worker {worker.name} in /api/workers", interval=0.5)
    assert "opsq.execute_action" in workers[worker.name]["registered"]

    def task_listed() -> dict:
        tasks = httpx.get(f"{url}/api/tasks", params={"taskname": "opsq.execute_action"}, auth=auth,
                          timeout=10).json()
        task = tasks.get(handle.id)
        return task if task and task["state"] == "SUCCESS" else {}

    task = wait_for(task_listed, 30, "the finished action in /api/tasks", interval=0.5)
    assert task["name"] == "opsq.execute_action"
    assert task["worker"] == worker.name
    # Flower shows the kwargs the worker's events carry: redacted, never the raw params' secrets.
    assert "test-token-slack" not in str(task)

    output = flower.output()
    assert f"http://127.0.0.1:{port}/" in output  # it says where it serves
    assert password not in output


def test_flower_refuses_to_start_without_credentials(opsq_env_sqlite):
    env = {k: v for k, v in opsq_env_sqlite().items() if not k.startswith("OPSQ_FLOWER_")}
    done = subprocess.run([sys.executable, "-m", "workers.cli.main", "flower", "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "OPSQ_FLOWER_USER" in lines[0] and "OPSQ_FLOWER_PASSWORD" in lines[0]
    assert "--unauthenticated-local" in lines[0]

    # Only one of the two is not enough either; and the password is never echoed.
    done = subprocess.run([sys.executable, "-m", "workers.cli.main", "flower"], cwd=ROOT,
                          env={**env, "OPSQ_FLOWER_PASSWORD": "only-the-password"}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0
    assert "only-the-password" not in done.stdout + done.stderr

    # --unauthenticated-local binds loopback only.
    done = subprocess.run([sys.executable, "-m", "workers.cli.main", "flower", "--unauthenticated-local",
                           "--address", "0.0.0.0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "127.0.0.1" in done.stderr


def test_flower_unauthenticated_local_serves_loopback_only(opsq_env_sqlite, flowers, tmp_path):
    env = {k: v for k, v in opsq_env_sqlite().items() if not k.startswith("OPSQ_FLOWER_")}
    port = free_port()
    flower = FlowerProcess(env, ["--port", str(port), "--unauthenticated-local"], tmp_path / "flower.log")
    flowers.append(flower)
    flower.wait_serving(f"http://127.0.0.1:{port}", None)
    assert "no authentication, local only" in flower.output()
    listening = subprocess.run(["ss", "-Htln", f"sport = :{port}"], capture_output=True, text=True)
    if listening.returncode == 0 and listening.stdout.strip():
        local = {line.split()[3] for line in listening.stdout.strip().splitlines()}
        assert local == {f"127.0.0.1:{port}"}, local
