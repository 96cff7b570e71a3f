"""What `INFO memory` means for a broker (workers.ops.health.redis_memory_check): full, under pressure, an
evicting policy, no maxmemory."""

from __future__ import annotations

from workers.ops.health import FAIL, OK, WARN, redis_memory_check

MIB = 1024 * 1024


def info(used: int, maxmemory: int, policy: str = "noeviction") -> dict[str, object]:
    return {"used_memory": used, "maxmemory": maxmemory, "maxmemory_policy": policy}


def test_a_full_redis_is_a_failure_that_names_maxmemory():
    check = redis_memory_check(info(2 * MIB + 10, 2 * MIB), 0.8)
    assert check.status == FAIL
    assert check.detail.startswith("Redis is out of memory") and "maxmemory 2.0 MiB" in check.detail
    assert "every write is refused" in check.detail


def test_pressure_above_the_ratio_is_a_warning_below_it_ok():
    assert redis_memory_check(info(85 * MIB, 100 * MIB), 0.8).status == WARN
    assert "OPSQ_REDIS_MEMORY_WARN_RATIO (80%)" in redis_memory_check(info(85 * MIB, 100 * MIB), 0.8).detail
    assert redis_memory_check(info(79 * MIB, 100 * MIB), 0.8).status == OK
    assert redis_memory_check(info(85 * MIB, 100 * MIB), 0.9).status == OK


def test_an_evicting_policy_fails_even_with_room_left():
    check = redis_memory_check(info(1 * MIB, 100 * MIB, "allkeys-lru"), 0.8)
    assert check.status == FAIL
    assert "allkeys-lru" in check.detail and "noeviction" in check.detail and "lost message" in check.detail


def test_no_maxmemory_is_ok_but_an_evicting_policy_is_still_named():
    assert redis_memory_check(info(500 * MIB, 0), 0.8).status == OK
    latent = redis_memory_check(info(500 * MIB, 0, "volatile-lru"), 0.8)
    assert latent.status == WARN and "volatile-lru" in latent.detail


def test_within_two_percent_of_maxmemory_is_full():
    # Redis refuses writes above maxmemory; a reading just below (a client's buffers freed) is the same state.
    assert redis_memory_check(info(int(1.99 * MIB), 2 * MIB), 0.8).detail.startswith("Redis is out of memory")
