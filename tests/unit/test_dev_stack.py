"""workers.dev.stack and `opsq sandbox`: the settings that point opsqueue at the sandbox (printed, so they
hold no secret), a taken default port moved to a free one and said so, a taken explicit port refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from executors.registry import PLATFORMS, TOKEN_PLATFORMS
from workers.cli.dev_cmd import shell_lines
from workers.dev import stack
from workers.errors import ConfigError


def test_sandbox_settings_give_every_token_platform_a_token_and_point_all_at_the_sandbox():
    env = stack.sandbox_settings("http://127.0.0.1:9999")
    assert env["OPSQ_PLATFORM_BASE_URL"] == "http://127.0.0.1:9999"
    assert {f"OPSQ_{p.upper()}_TOKEN" for p in TOKEN_PLATFORMS} <= set(env)
    assert set(env.values()) >= {stack.SANDBOX_TOKEN, stack.LOOPBACK}


def test_point_at_sandbox_drops_per_platform_base_urls_and_keeps_an_allow_list():
    environ = {"OPSQ_SLACK_BASE_URL": "https://slack.com/api", "OPSQ_WEBHOOK_ALLOW_HOSTS": "hooks.internal",
               "OPSQ_SLACK_TOKEN": "xoxb-real"}
    stack.point_at_sandbox("http://127.0.0.1:9999", environ)
    assert not any(f"OPSQ_{p.upper()}_BASE_URL" in environ for p in PLATFORMS)
    assert environ["OPSQ_WEBHOOK_ALLOW_HOSTS"] == "hooks.internal,127.0.0.1/32"
    assert environ["OPSQ_SLACK_TOKEN"] == stack.SANDBOX_TOKEN  # a real token never goes to the sandbox


def test_export_lines_are_what_a_shell_reads_back():
    lines = stack.export_lines({"OPSQ_A": "plain", "OPSQ_B": "has space;and $dollar"})
    out = subprocess.run(["bash", "-c", "; ".join(lines) + '; printf "%s|%s" "$OPSQ_A" "$OPSQ_B"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "plain|has space;and $dollar"


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_taken_default_port_moves_to_a_free_one_and_says_so(taken_port):
    server, note = stack.bind_sandbox(port=taken_port, fallback=True)
    try:
        assert server.port != taken_port
        assert note == f"port {taken_port} is taken: the sandbox listens on {server.port} instead"
    finally:
        server.stop()


def test_a_taken_explicit_port_is_one_clear_error(taken_port):
    with pytest.raises(ConfigError, match=f"port {taken_port} on 127.0.0.1 is taken: give another with --port"):
        stack.bind_sandbox(port=taken_port, fallback=False)
    result = subprocess.run([sys.executable, "-m", "workers.cli.main", "sandbox", "--port", str(taken_port)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: port {taken_port} on 127.0.0.1 is taken: give another "
                                                  "with --port (0: any free one)"]


def test_opsq_sandbox_says_which_settings_point_at_it():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    process = subprocess.Popen([sys.executable, "-m", "workers.cli.main", "sandbox", "--port", "0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("opsq sandbox listening on http://127.0.0.1:"), first
        url = first.split()[4].rstrip(";")
        lines = [process.stdout.readline().strip() for _ in stack.sandbox_settings(url)]
        assert lines == stack.export_lines(stack.sandbox_settings(url))
        assert f"export OPSQ_PLATFORM_BASE_URL={url}" in lines and "export OPSQ_SLACK_TOKEN=sandbox-token" in lines
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


def test_dev_prints_no_password_of_a_url():
    lines = shell_lines({"OPSQ_DATABASE_URL": "postgresql+psycopg://opsq:s3cret@db:5432/opsq",
                         "OPSQ_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert not any("s3cret" in line for line in lines)
    assert "# OPSQ_DATABASE_URL: as set in this shell (it holds a password, not printed)" in lines
    assert "export OPSQ_REDIS_URL=redis://127.0.0.1:6379/0" in lines
