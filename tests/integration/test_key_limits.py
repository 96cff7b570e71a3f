"""Limits per key (issue 14) in the admit and settle scripts, against a real Redis: each key its own bucket, all or
none taken, concurrency leases that a dead worker's attempt gives back by expiring, runtime changes read by a
running guard in its admission's own round trip, and a 429's pause honoured by every worker."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from workers.cli.main import cli, register
from workers.guards import Attempt, Outcome, keys
from workers.guards import ratelimit as rl
from workers.guards.limits import digest
from workers.guards.redis_guard import RedisGuard
from workers.settings import RateLimitConfig, Settings
from workers.store import audit

pytestmark = pytest.mark.integration

TOKEN = "xoxb-secret-token-value"


def make_guard(client: redis.Redis, key_limits: dict[str, Any] | None = None, **kw: Any) -> RedisGuard:
    settings = Settings(**{"rate_limits": {"slack": RateLimitConfig(rate=0)}, "key_limits": key_limits or {},
                           "idempotency_lease_s": 0.5, "slack_token": TOKEN, **kw})
    return RedisGuard(settings, client=client)


def send(action_id: str, channel: str) -> Attempt:
    return Attempt(action_id=action_id, platform="slack", action="send_message", attempt=1,
                   params={"channel": channel, "text": "hi"})


class CountingCalls:
    """Counts the scripts a guard sends (each EVALSHA is one round trip)."""

    def __init__(self, guard: RedisGuard, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = guard.redis.evalsha

        def counted(*args: Any) -> Any:
            self.n += 1
            return real(*args)

        monkeypatch.setattr(guard.redis, "evalsha", counted)


def test_each_key_has_its_own_bucket_named_by_a_hash(redis_client):
    guard = make_guard(redis_client, {"slack": {"channel": {"rate": 5, "burst": 2}}})
    verdicts = [guard.admit(send(f"a{i}", "C-ALPHA")) for i in range(3)]
    assert [v.verdict for v in verdicts] == ["run", "run", "rate_limited"]
    assert 0.15 < verdicts[2].wait_s <= 0.2
    assert guard.admit(send("b0", "C-BETA")).run  # another channel: its own bucket
    bucket = keys.key_bucket("slack", "channel", digest("C-ALPHA"))
    assert redis_client.exists(bucket) and 0 < redis_client.ttl(bucket) <= 61  # an idle key vanishes
    assert not [k for k in redis_client.keys("*") if b"C-ALPHA" in k]  # the value is in no key's name
    waiting = rl.status("slack", client=redis_client, settings=guard.settings)["waiting"]
    assert [(w["per"], w["key"], w["state"]) for w in waiting] == [("channel", "C-ALPHA", "waiting")]
    time.sleep(verdicts[2].wait_s + 0.01)
    assert guard.admit(send("a9", "C-ALPHA")).run


def test_one_key_short_of_a_token_takes_none_from_the_others(redis_client):
    guard = make_guard(redis_client, {"slack": {"channel": {"rate": 0.1, "burst": 1},
                                                "token": {"rate": 0.1, "burst": 2}}})
    token_bucket = keys.key_bucket("slack", "token", digest(TOKEN))
    assert guard.admit(send("a1", "C1")).run  # C1: 1 -> 0, the token: 2 -> 1
    assert float(redis_client.hget(token_bucket, "tokens")) == pytest.approx(1, abs=0.01)
    refused = guard.admit(send("a2", "C1"))  # C1 is empty: the token's bucket keeps its token
    assert refused.verdict == "rate_limited" and refused.wait_s > 9
    assert float(redis_client.hget(token_bucket, "tokens")) == pytest.approx(1, abs=0.01)
    assert guard.admit(send("a3", "C2")).run  # ... which C2 then gets
    refused = guard.admit(send("a4", "C3"))  # the token's bucket is empty: C3 keeps its own
    assert refused.verdict == "rate_limited"
    assert not redis_client.exists(keys.key_bucket("slack", "channel", digest("C3")))
    # The token is in no key, no value, no member: only its hash.
    for key in redis_client.keys("*"):
        assert TOKEN.encode() not in key
        kind = redis_client.type(key)
        dump = (redis_client.hgetall(key) if kind == b"hash" else redis_client.zrange(key, 0, -1) if kind == b"zset"
                else [])
        assert TOKEN not in repr(dump)
    by_kind = {w["per"]: w for w in rl.status("slack", client=redis_client, settings=guard.settings)["waiting"]}
    assert by_kind["token"]["key"] == f"sha1:{digest(TOKEN)[:8]}" and by_kind["channel"]["key"] == "C1"


def test_concurrency_leases_are_given_back_at_settle_or_by_expiring(redis_client):
    guard = make_guard(redis_client, {"slack": {"channel": {"concurrency": 2}}})
    first, second, third = send("a1", "C1"), send("a2", "C1"), send("a3", "C1")
    adm1, adm2 = guard.admit(first), guard.admit(second)
    assert adm1.run and adm2.run
    refused = guard.admit(third)
    assert refused.verdict == "concurrency_limited" and 0.05 <= refused.wait_s <= 0.25
    assert guard.admit(send("b1", "C2")).run  # another channel has its own leases
    guard.settle(first, adm1, Outcome(ok=True, result={}))
    adm3 = guard.admit(third)
    assert adm3.run  # the settled attempt gave its lease back
    assert guard.admit(send("a4", "C1")).verdict == "concurrency_limited"
    # Neither holder settles (their worker was killed): their leases end with OPSQ_IDEMPOTENCY_LEASE_S (0.5 s).
    time.sleep(0.55)
    assert guard.admit(send("a5", "C1")).run
    status = rl.status("slack", client=redis_client, settings=guard.settings)
    assert status["limits"] == [{"per": "channel", "rate_per_s": None, "burst": None, "concurrency": 2,
                                 "source": "env"}]


def test_a_runtime_change_reaches_a_running_guard_in_its_next_admission(redis_client, monkeypatch):
    guard = make_guard(redis_client)
    calls = CountingCalls(guard, monkeypatch)
    assert guard.admit(send("warm", "C1")).run  # its first admission learns the config (two calls)
    calls.n = 0
    assert all(guard.admit(send(f"x{i}", "C1")).run for i in range(3))  # no limit per channel
    assert calls.n == 3  # one round trip per admission
    # What `opsq ratelimit set slack --rate 1/s --per channel` writes (without its audit entry).
    rl._write(redis_client, "slack", {"channel": {"rate": 1.0, "burst": 1}})
    calls.n = 0
    assert guard.admit(send("y1", "C1")).run
    assert calls.n == 2  # told `stale` (nothing taken) with the new config, then admitted under it
    assert guard.admit(send("y2", "C1")).verdict == "rate_limited"
    assert calls.n == 3
    status = rl.status("slack", client=redis_client, settings=guard.settings)
    assert [(r["per"], r["rate_per_s"], r["source"]) for r in status["limits"]] == [("channel", 1.0, "runtime")]
    rl._write(redis_client, "slack", None)  # `opsq ratelimit unset`: back to the settings (no limit)
    assert guard.admit(send("y3", "C1")).run


def test_a_pause_after_a_429_holds_every_worker_for_that_key(redis_client, redis_url):
    limits = {"slack": {"channel": {"rate": 50, "burst": 5}}}
    worker_a = make_guard(redis_client, limits)
    worker_b = make_guard(redis.Redis.from_url(redis_url), limits)  # another worker, its own connection
    hit = send("a1", "C1")
    adm = worker_a.admit(hit)
    worker_a.settle(hit, adm, Outcome(ok=False, error_kind="rate_limited", error="429", pause_s=1.0))
    paused = worker_b.admit(send("a2", "C1"))
    assert paused.verdict == "rate_limited" and 0.9 < paused.wait_s <= 1.0
    assert worker_b.admit(send("b1", "C2")).run  # only that key
    status = rl.status("slack", client=redis_client, settings=worker_a.settings)
    assert [(w["key"], w["state"]) for w in status["waiting"]] == [("C1", "paused")]
    assert 0.5 < status["waiting"][0]["for_s"] <= 1.0
    stats = redis_client.hgetall(keys.stats("slack"))
    assert stats[b"pauses|channel"] == b"1" and stats[b"keywaits|channel|pause"] == b"1"
    # A shorter pause never shortens a longer one.
    worker_b.settle(hit, adm, Outcome(ok=False, error_kind="rate_limited", error="429", pause_s=0.1))
    time.sleep(0.5)
    assert worker_b.admit(send("a3", "C1")).verdict == "rate_limited"
    time.sleep(0.55)
    assert worker_b.admit(send("a4", "C1")).run


def test_without_a_key_limit_a_429_pauses_the_platform(redis_client):
    guard = make_guard(redis_client)  # slack unlimited, no key limits
    hit = send("a1", "C1")
    guard.settle(hit, guard.admit(hit), Outcome(ok=False, error_kind="rate_limited", error="429", pause_s=0.4))
    assert guard.admit(send("a2", "C2")).verdict == "rate_limited"
    assert 0 < rl.status("slack", client=redis_client, settings=guard.settings)["paused_for_s"] <= 0.4
    time.sleep(0.45)
    assert guard.admit(send("a3", "C2")).run


def test_the_ratelimit_commands(opsq_env_sqlite, redis_client):
    register()
    run = CliRunner().invoke
    out = run(cli, ["ratelimit", "set", "slack", "--per", "channel", "--rate", "30/min", "--concurrency", "2",
                    "--reason", "flood", "--actor", "dana"])
    assert out.exit_code == 0, out.output
    assert "rate limit slack per channel: concurrency 2, rate 30/min (by dana" in out.output
    assert run(cli, ["ratelimit", "set", "slack", "--burst", "3", "--actor", "dana"]).exit_code == 0
    # What a worker would see: a channel key waiting for its token.
    guard = make_guard(redis_client)
    assert guard.admit(send("a1", "CWAIT0001")).run
    assert guard.admit(send("a2", "CWAIT0001")).verdict == "rate_limited"
    table = run(cli, ["ratelimit", "status", "slack"])
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert any(line.split()[:3] == ["slack", "1/s", "3"] and line.split()[-1] == "runtime" for line in lines), lines
    assert any(line.split() == ["slack", "channel", "30/min", "1", "2", "runtime"] for line in lines), lines
    assert any(line.split()[:4] == ["slack", "channel", "CWAIT0001", "WAITING"] for line in lines), lines
    assert [(e["action"], e["actor"]) for e in audit.entries() if e["action"].startswith("ratelimit")] == [
        ("ratelimit_set", "dana"), ("ratelimit_set", "dana")]
    # Refused with one line, nothing changed.
    for args, says in ((["--per", "chanel", "--rate", "1/s"], "no key kind 'chanel'"),
                       (["--concurrency", "2"], "a concurrency limit is per key"),
                       (["--per", "channel", "--rate", "fast"], "invalid rate 'fast'"),
                       ([], "nothing to set")):
        bad = run(cli, ["ratelimit", "set", "slack", *args, "--actor", "dana"])
        assert bad.exit_code != 0 and says in bad.output, (args, bad.output)
    assert run(cli, ["ratelimit", "unset", "slack", "--per", "channel", "--actor", "dana"]).exit_code == 0
    assert rl.runtime_config(redis_client)[1] == {"slack": {"": {"burst": 3}}}
    assert run(cli, ["ratelimit", "unset", "slack", "--per", "channel", "--actor", "dana"]).exit_code != 0
    assert run(cli, ["ratelimit", "unset", "slack", "--all", "--actor", "dana"]).exit_code == 0
    assert rl.runtime_config(redis_client)[1] == {}
