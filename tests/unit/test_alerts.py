"""beat.alerts.sync against a SQLite store: an alert fires once, follows its condition while it fires (one row,
its severity and message brought up to date) and is notified again only when its severity rises."""

from __future__ import annotations

import logging

import pytest

from beat import alerts
from workers.settings import reload_settings
from workers.store import db

NEAR = alerts.Condition("redis_memory", "redis_memory", "high", "1.7 MiB used of maxmemory 2.0 MiB (85%)")
FULL = alerts.Condition("redis_memory", "redis_memory", "critical", "Redis is out of memory: 2.0 MiB used (100%)")
OWNED = ("redis_memory",)


@pytest.fixture(autouse=True)
def sqlite_store(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPSQ_DATABASE_URL", f"sqlite:///{tmp_path / 't.db'}")
    monkeypatch.delenv("OPSQ_ALERT_SLACK_CHANNEL", raising=False)
    reload_settings()
    db.reset_engine()


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "opsq.alerts"]


def test_a_warning_that_becomes_critical_updates_the_same_alert_and_is_notified_once(caplog):
    caplog.set_level(logging.INFO, logger="opsq.alerts")
    assert alerts.sync([NEAR], OWNED) == {"fired": ["redis_memory"], "escalated": [], "cleared": []}

    assert alerts.sync([FULL], OWNED) == {"fired": [], "escalated": ["redis_memory"], "cleared": []}
    (row,) = alerts.alerts()
    assert (row["state"], row["severity"], row["message"]) == ("firing", "critical", FULL.message)
    assert alerts.sync([FULL], OWNED) == {"fired": [], "escalated": [], "cleared": []}  # no change: no notice

    assert _notices(caplog) == [f"alert [FIRING] {NEAR.message}",
                                f"alert [ESCALATED to critical] {FULL.message}"]


def test_an_easing_alert_is_updated_quietly_and_a_new_message_replaces_the_old():
    alerts.sync([FULL], OWNED)
    assert alerts.sync([NEAR], OWNED)["escalated"] == []
    (row,) = alerts.alerts()
    assert (row["severity"], row["message"]) == ("high", NEAR.message)

    later = alerts.Condition(NEAR.key, NEAR.kind, NEAR.severity, "1.8 MiB used of maxmemory 2.0 MiB (90%)")
    assert alerts.sync([later], OWNED) == {"fired": [], "escalated": [], "cleared": []}
    (row,) = alerts.alerts()
    assert (row["state"], row["severity"], row["message"]) == ("firing", "high", later.message)


def test_an_updated_alert_still_clears_once_and_a_new_episode_is_a_new_alert():
    alerts.sync([NEAR], OWNED)
    alerts.sync([FULL], OWNED)
    assert alerts.sync([], OWNED)["cleared"] == ["redis_memory"]
    assert alerts.sync([], OWNED)["cleared"] == []
    assert alerts.sync([NEAR], OWNED)["fired"] == ["redis_memory"]
    rows = alerts.alerts()
    assert [(r["state"], r["severity"]) for r in rows] == [("firing", "high"), ("cleared", "critical")]


def test_a_rule_leaves_the_alerts_of_other_rules_alone():
    other = alerts.Condition("audit_chain", "audit_tampered", "critical", "audit trail tampered at entry 3")
    alerts.sync([other], ("audit_chain",))
    assert alerts.sync([NEAR], OWNED) == {"fired": ["redis_memory"], "escalated": [], "cleared": []}
    assert {r["key"]: r["state"] for r in alerts.alerts()} == {"audit_chain": "firing", "redis_memory": "firing"}
