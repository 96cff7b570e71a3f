"""What the report commands print is read by people (issue 16, cosmetics): `opsq maintenance list` shows the
cron expression and the interval (not Celery's reprs), `opsq metrics` a rate rounded as people read it, and
`opsq analyze failures` groups messages that differ only in numbers while keeping the addresses readable."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from celery.schedules import crontab
from sqlalchemy import insert

from beat.schedule import describe, interval_text
from tests.integration.opsq_cli import opsq
from workers.cli.reports_cmd import per_minute
from workers.ops.reports import _normalise
from workers.store.db import get_engine
from workers.store.models import ActionRun, utcnow

pytestmark = pytest.mark.integration


def _failed(n: int, error: str, platform: str = "webhook", action: str = "post") -> dict:
    now = utcnow()
    return {"id": f"f{n:031d}", "platform": platform, "action": action, "params": {}, "priority": "normal",
            "queue": platform, "status": "failed", "attempts": 1, "max_attempts": 5, "error": error,
            "error_kind": "network", "created_at": now - timedelta(seconds=5), "started_at": now - timedelta(seconds=4),
            "finished_at": now, "updated_at": now}


@pytest.fixture
def env_with_failures(opsq_env_sqlite):
    env = opsq_env_sqlite()
    rows = [_failed(n, f"POST http://127.0.0.1:8765/orders/{100 + n} failed after {n + 1} attempts: connection "
                       f"refused (request {n:020x})") for n in range(3)]
    rows.append(_failed(9, "POST http://10.0.0.7:9000/orders/7 failed after 2 attempts: connection refused "
                           f"(request {9:020x})"))
    rows += [_failed(20 + n, f"slack chat.postMessage: not_authed (attempt {n})", "slack", "send_message")
             for n in range(4)]
    with get_engine().begin() as conn:
        conn.execute(insert(ActionRun), rows)
    return env


def test_analyze_failures_keeps_addresses_and_groups_by_the_rest(env_with_failures):
    out = opsq(env_with_failures, "analyze", "failures")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # The three failures against 127.0.0.1:8765 are one message; the one against another host is its own.
    assert ("          3 x POST http://127.0.0.1:8765/orders/<n> failed after <n> attempts: connection refused "
            "(request <id>)") in lines, out.stdout
    assert ("          1 x POST http://10.0.0.7:9000/orders/<n> failed after <n> attempts: connection refused "
            "(request <id>)") in lines, out.stdout
    assert "          4 x slack chat.postMessage: not_authed (attempt <n>)" in lines, out.stdout
    assert "<n>.<n>" not in out.stdout


@pytest.mark.parametrize(("message", "grouped"), [
    ("connect to 127.0.0.1:6379 refused", "connect to 127.0.0.1:6379 refused"),
    ("hooks.example.com returned 503 after 2.5s", "hooks.example.com returned <n> after <n>s"),
    ("https://api.notion.com/v1/pages/42 answered 429", "https://api.notion.com/v1/pages/<n> answered <n>"),
    ("localhost:8080 timed out after 30s", "localhost:8080 timed out after <n>s"),
    ("action 0123456789abcdef0123 failed", "action <id> failed"),
    ("version 1.2.3 refused", "version <n> refused"),
    # What is surely a network location is kept: a URL's authority, an IPv4 (and port), a dotted host:port or
    # localhost:port, the host after an @.
    ("POST https://deploy@hooks-2.example.com:8443/a/7 failed",
     "POST https://deploy@hooks-2.example.com:8443/a/<n> failed"),
    ("10.0.0.7 unreachable after 3 tries; 10.0.0.8. too", "10.0.0.7 unreachable after <n> tries; 10.0.0.8. too"),
    ("db-3.internal:5432 refused at 12:30:45", "db-3.internal:5432 refused at <n>:<n>:<n>"),
    ("login as opsq@build-7.example.com failed (code 12)", "login as opsq@build-7.example.com failed (code <n>)"),
    # IPv6, bare or bracketed with a port, is an address too; a clock time is not one.
    ("connect to 2001:db8::7 refused", "connect to 2001:db8::7 refused"),
    ("connect to [::1]:8080 refused after 3 tries", "connect to [::1]:8080 refused after <n> tries"),
    ("::1 and fe80::1ff:fe23:4567:890a down", "::1 and fe80::1ff:fe23:4567:890a down"),
    ("2001:db8:0:0:0:0:0:7 down; ::ffff:10.0.0.1 up", "2001:db8:0:0:0:0:0:7 down; ::ffff:10.0.0.1 up"),
    ("[2001:db8::7]:443 and http://[::1]:8080/x/5", "[2001:db8::7]:443 and http://[::1]:8080/x/<n>"),
    # A `host:port` is kept only when its host has a dot or is localhost: a dotless word:number is a field.
    ("approval:17 expired", "approval:<n> expired"),
    ("row:42 col:7 invalid", "row:<n> col:<n> invalid"),
    ("a::b at 12:30:45", "a::b at <n>:<n>:<n>"),
    # Everything else has its numbers folded, dotted file names included (no host names those).
    ("could not read invoice-A-1002.pdf: not found", "could not read invoice-A-<n>.pdf: not found"),
    ("upload of report_2026.12.csv (part 3) failed", "upload of report_<n>.csv (part <n>) failed"),
    ("sheet export.2026-12-07.xlsx is locked", "sheet export.<n>-<n>-<n>.xlsx is locked"),
    ("python3.11 with utf8 and v1.2.3", "python3.11 with utf8 and v1.2.3"),  # a number in a word is the word's
])
def test_the_normaliser_folds_numbers_and_ids_not_addresses(message, grouped):
    assert _normalise(message) == grouped


def test_analyze_failures_groups_errors_that_differ_in_a_file_names_number(opsq_env_sqlite):
    env = opsq_env_sqlite()
    rows = [_failed(n, f"could not read invoice-A-{1002 + n}.pdf: not found", "gdrive", "upload_file")
            for n in range(3)]
    with get_engine().begin() as conn:
        conn.execute(insert(ActionRun), rows)
    out = opsq(env, "analyze", "failures")
    assert out.returncode == 0, out.stderr
    assert "          3 x could not read invoice-A-<n>.pdf: not found" in out.stdout.splitlines(), out.stdout
    assert "1002" not in out.stdout


def test_metrics_prints_a_rounded_rate(env_with_failures):
    out = opsq(env_with_failures, "metrics", "--since", "7m")
    assert out.returncode == 0, out.stderr
    header, *rows = [ln for ln in out.stdout.splitlines() if ln.strip() and not ln.startswith("by priority")]
    col = header.index("PER MIN")
    rates = {row.split()[0]: row[col:].split()[0] for row in rows if row.split()[0] in ("slack", "webhook")}
    # 4 failures in 7 minutes: 0.571428... per minute, shown as 0.571.
    assert rates == {"slack": "0.571", "webhook": "0.571"}, out.stdout
    assert [per_minute(r) for r in (75.227, 0.4166, 12.0, 1250.4, 0.0)] == ["75.2", "0.417", "12", "1250", "0"]


def test_maintenance_list_shows_the_cron_expression_and_the_interval(opsq_env_sqlite):
    env = opsq_env_sqlite(OPSQ_BEAT_INTERVALS='{"cleanup": 5400, "detect_stuck": 30}')
    get_engine()  # the schema (a read command creates none)
    out = opsq(env, "maintenance", "list")
    assert out.returncode == 0, out.stderr
    rows = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:] if ln.strip()}
    assert re.search(r"\bcron 0 2 \* \* \*\s", rows["backup_state"]), out.stdout
    assert re.search(r"\bevery 1h30m\s", rows["cleanup"]) and re.search(r"\bevery 30s\s", rows["detect_stuck"])
    assert re.search(r"\bevery 1d\s", rows["verify_audit"]), out.stdout
    assert "on a reported loss" in rows["recover_lost"]  # started by beat when a loss is reported, not scheduled
    assert "<crontab" not in out.stdout and "day," not in out.stdout and "0:00" not in out.stdout


def test_schedules_are_described_as_people_write_them():
    assert describe(crontab(minute=15, hour="*/6")) == "cron 15 */6 * * *"
    assert describe(timedelta(days=1)) == "every 1d" and describe(timedelta(seconds=90)) == "every 1m30s"
    assert [interval_text(s) for s in (0.5, 1, 3600, 86400 + 60, 2.5)] == ["0.5s", "1s", "1h", "1d1m", "2.5s"]
