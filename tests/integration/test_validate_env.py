"""Issue 16, item 3: `opsq validate-env` says FAIL for a platform without a token when its base URL is the real
API, WARN when it is the sandbox (OPSQ_PLATFORM_BASE_URL or a per-platform OPSQ_<PLATFORM>_BASE_URL under
/<platform>), and exits non-zero on any FAIL. The real CLI, as a subprocess with a controlled environment."""

from __future__ import annotations

import json
import os

import pytest

from executors.registry import EXECUTORS, TOKEN_PLATFORMS
from tests.integration.opsq_cli import opsq

pytestmark = pytest.mark.integration

SANDBOX = "http://127.0.0.1:8765"


@pytest.fixture
def bare_env(tmp_path, redis_url):
    """No OPSQ_ setting but where state lives: no token, no base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSQ_")}
    env.update(OPSQ_HOME=str(tmp_path / "home"), OPSQ_REDIS_URL=redis_url,
               OPSQ_DATABASE_URL=f"sqlite:///{tmp_path / 'opsq.db'}")
    return env


def _lines(out) -> dict[str, tuple[str, str]]:
    """Setting name -> (status, detail) of the text output; every line is `STATUS  NAME  DETAIL`."""
    found = {}
    for line in out.stdout.splitlines():
        status, name, *detail = line.split(None, 2)
        assert name not in found or name in ("redis",), f"{name} shown twice:\n{out.stdout}"
        found[name] = (status, detail[0] if detail else "")
    return found


def test_no_token_on_the_real_apis_fails(bare_env):
    out = opsq(bare_env, "validate-env")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = _lines(out)
    for platform in TOKEN_PLATFORMS:
        status, detail = lines[f"OPSQ_{platform.upper()}_TOKEN"]
        assert status == "FAIL", out.stdout
        assert f"fail as auth at {EXECUTORS[platform].default_base_url}" in detail, detail
    assert "(not set)" not in lines["OPSQ_SLACK_TOKEN"][1]  # not also an OK line saying "(not set)"
    assert lines["OPSQ_WEBHOOK_TOKEN"][0] == "OK"  # webhooks need no token


def test_no_token_on_the_sandbox_warns_and_exits_zero(bare_env):
    out = opsq({**bare_env, "OPSQ_PLATFORM_BASE_URL": SANDBOX}, "validate-env")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = _lines(out)
    for platform in TOKEN_PLATFORMS:
        status, detail = lines[f"OPSQ_{platform.upper()}_TOKEN"]
        assert status == "WARN", out.stdout
        assert f"sandbox at {SANDBOX}/{platform}" in detail and "export" in detail, detail
    assert not [name for name, (status, _) in lines.items() if status == "FAIL"], out.stdout


def test_a_per_platform_base_url_decides_for_its_platform(bare_env):
    # The sandbox for all but Slack, which is sent to the real API: Slack fails, the others warn.
    env = {**bare_env, "OPSQ_PLATFORM_BASE_URL": SANDBOX, "OPSQ_SLACK_BASE_URL": "https://slack.com/api"}
    out = opsq(env, "validate-env", "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["OPSQ_SLACK_TOKEN"]["status"] == "fail"
    assert checks["OPSQ_NOTION_TOKEN"]["status"] == "warn"
    # Only Notion on the sandbox (a per-platform URL under /notion), the rest on their real APIs.
    env = {**bare_env, "OPSQ_NOTION_BASE_URL": f"{SANDBOX}/notion/"}
    checks = {c["name"]: c for c in json.loads(opsq(env, "validate-env", "--json").stdout)}
    assert checks["OPSQ_NOTION_TOKEN"]["status"] == "warn"
    assert checks["OPSQ_TRELLO_TOKEN"]["status"] == "fail"


def test_every_token_set_passes_with_the_tokens_masked(bare_env):
    secrets = {f"OPSQ_{p.upper()}_TOKEN": f"secret-{p}-0123456789abcdef" for p in TOKEN_PLATFORMS}
    out = opsq({**bare_env, **secrets, "OPSQ_TRELLO_API_KEY": "trello-key-0123456789"}, "validate-env")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = _lines(out)
    for name, secret in secrets.items():
        assert lines[name][0] == "OK" and "****ef" in lines[name][1], out.stdout
        assert secret not in out.stdout
    # One missing token on a real API is enough to fail.
    del secrets["OPSQ_GDRIVE_TOKEN"]
    out = opsq({**bare_env, **secrets, "OPSQ_TRELLO_API_KEY": "trello-key-0123456789"}, "validate-env")
    assert out.returncode == 1 and _lines(out)["OPSQ_GDRIVE_TOKEN"][0] == "FAIL", out.stdout


def test_a_deployment_that_uses_some_platforms_passes_without_the_others_tokens(bare_env):
    """OPSQ_PLATFORMS names the platforms this installation calls: the others need no token, and are one line
    each; without it the same Slack-only deployment exits 1 for the four tokens it has no use for."""
    env = {**bare_env, "OPSQ_SLACK_TOKEN": "xoxb-0123456789-abcdef"}
    assert opsq(env, "validate-env").returncode == 1
    out = opsq({**env, "OPSQ_PLATFORMS": "slack, webhook"}, "validate-env")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = _lines(out)
    assert lines["OPSQ_PLATFORMS"] == ("OK", "slack,webhook")
    assert lines["OPSQ_SLACK_TOKEN"][0] == "OK"
    for platform in ("notion", "trello", "gdrive", "gsheets"):
        assert lines[platform] == ("OK", "not used (not in OPSQ_PLATFORMS): its settings are not checked, its "
                                         "actions are refused at submit"), out.stdout
        assert not [name for name in lines if name.startswith(f"OPSQ_{platform.upper()}_")], out.stdout
    # A used platform without its token still fails.
    out = opsq({**bare_env, "OPSQ_PLATFORMS": "slack,notion", "OPSQ_SLACK_TOKEN": "xoxb-0123456789-abcdef"},
               "validate-env")
    assert out.returncode == 1 and _lines(out)["OPSQ_NOTION_TOKEN"][0] == "FAIL", out.stdout


def test_an_unknown_name_in_opsq_platforms_is_one_error_line(bare_env):
    out = opsq({**bare_env, "OPSQ_PLATFORMS": "slack,slak"}, "validate-env")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("error: invalid setting: OPSQ_PLATFORMS: unknown platform 'slak' (known: slack,"), \
        out.stderr


def test_a_real_gateway_under_a_platform_path_is_not_the_sandbox(bare_env):
    """The sandbox is a loopback or localhost host (or compose's `sandbox` service) with the path /<platform>: a
    company's gateway at https://gw.corp/slack is a real API, and a missing token there is a FAIL."""
    env = {**bare_env, "OPSQ_PLATFORMS": "slack"}
    for url, status in (("https://gw.corp/slack", "FAIL"), ("http://localhost:9000/slack", "WARN"),
                        ("http://[::1]:8765/slack", "WARN"), ("http://sandbox:8765/slack", "WARN"),
                        ("http://127.0.0.1:8765/api/slack", "FAIL")):
        out = opsq({**env, "OPSQ_SLACK_BASE_URL": url}, "validate-env")
        assert _lines(out)["OPSQ_SLACK_TOKEN"][0] == status, (url, out.stdout)
        assert out.returncode == (1 if status == "FAIL" else 0), (url, out.stdout)


def test_the_webhook_proxy_is_checked_with_the_executors_parser_and_shown_masked(bare_env):
    env = {**bare_env, "OPSQ_PLATFORMS": "webhook"}
    out = opsq({**env, "OPSQ_WEBHOOK_PROXY": "http://ops:hunter2pw@proxy.corp:3128"}, "validate-env")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _lines(out)["OPSQ_WEBHOOK_PROXY"] == ("OK", "proxy.corp:3128, password set")
    assert "hunter2pw" not in out.stdout
    for proxy, says in (("https://ops:hunter2pw@proxy.corp:3128", "must be an http:// URL"),
                        ("http://ops:hunter2pw@proxy.corp:31x8", "the port is not a number"),
                        ("http://proxy.corp:3128/path", "must be http://[user:password@]host:port")):
        out = opsq({**env, "OPSQ_WEBHOOK_PROXY": proxy}, "validate-env")
        assert out.returncode == 1, (proxy, out.stdout)
        status, detail = _lines(out)["OPSQ_WEBHOOK_PROXY"]
        assert status == "FAIL" and says in detail and "hunter2pw" not in out.stdout, (proxy, out.stdout)
    # The per-destination signing keys: how many, never a character of them.
    secrets = '{"https://a.example": "letmein-a", "https://b.example": "letmein-b"}'
    out = opsq({**env, "OPSQ_WEBHOOK_SECRETS": secrets}, "validate-env")
    assert _lines(out)["OPSQ_WEBHOOK_SECRETS"] == ("OK", "set for 2 destinations") and "letmein" not in out.stdout
    out = opsq({**env, "OPSQ_WEBHOOK_SECRETS": "not json"}, "validate-env")
    assert out.returncode == 1 and _lines(out)["OPSQ_WEBHOOK_SECRETS"][0] == "FAIL", out.stdout
    # An origin httpx cannot parse: the same FAIL line, naming the key (never the secret), not "unexpected".
    out = opsq({**env, "OPSQ_WEBHOOK_SECRETS": '{"http://[::1": "letmein-c"}'}, "validate-env")
    assert out.returncode == 1 and "unexpected" not in out.stdout + out.stderr, out.stdout + out.stderr
    status, detail = _lines(out)["OPSQ_WEBHOOK_SECRETS"]
    assert status == "FAIL" and "'http://[::1' is not a URL origin" in detail and "letmein" not in out.stdout


def test_an_allow_listed_webhook_proxy_warns_naming_the_fix(bare_env):
    """The old docs had the proxy in OPSQ_WEBHOOK_ALLOW_HOSTS; that makes it a webhook destination too (any port of
    its host). By name, by an address its name resolves to, by a CIDR holding its address: WARN saying to remove it."""
    env = {**bare_env, "OPSQ_PLATFORMS": "webhook"}

    def warned(proxy: str, allow: str) -> list[str]:
        out = opsq({**env, "OPSQ_WEBHOOK_PROXY": proxy, "OPSQ_WEBHOOK_ALLOW_HOSTS": allow}, "validate-env")
        assert out.returncode == 0 and "hunter2pw" not in out.stdout, out.stdout + out.stderr
        return [ln for ln in out.stdout.splitlines() if ln.startswith("WARN") and "webhook proxy" in ln]

    for proxy, allow, admitted in (("http://ops:hunter2pw@localhost:3128", "Localhost.", "localhost"),
                                   ("http://localhost:3128", "10.0.0.0/8, 127.0.0.0/8", "127.0.0.1"),
                                   ("http://127.0.0.1:3128", "127.0.0.1", "127.0.0.1")):
        (line,) = warned(proxy, allow)
        assert line.split()[1] == "OPSQ_WEBHOOK_ALLOW_HOSTS" and f"admits the webhook proxy ({admitted})" in line
        assert "remove it from OPSQ_WEBHOOK_ALLOW_HOSTS" in line, line
    # Not admitted, or a name that does not resolve (only its name is compared): nothing to say.
    assert warned("http://localhost:3128", "10.0.0.0/8, hooks.internal") == []
    assert warned("http://proxy.invalid:3128", "10.0.0.0/8, 127.0.0.0/8") == []
    (line,) = warned("http://proxy.invalid:3128", "proxy.invalid")
    assert "admits the webhook proxy (proxy.invalid)" in line
