"""workers.queues: priorities onto kombu's Redis priority steps, one queue per platform, queue lists."""

from __future__ import annotations

import pytest

from workers.priorities import PRIORITY_VALUES, priority_name, priority_value
from workers.queues import ALL_QUEUES, parse_queue_list, queue_for


def test_priorities_map_onto_kombu_redis_steps_with_zero_highest():
    assert PRIORITY_VALUES == {"critical": 0, "high": 3, "normal": 6, "low": 9}
    assert priority_value("critical") < priority_value("low")
    assert [priority_name(v) for v in (0, 3, 6, 9, None)] == ["critical", "high", "normal", "low", "normal"]
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        priority_value("urgent")


def test_each_platform_has_its_own_queue_and_queue_lists_are_checked():
    for platform in ("slack", "notion", "trello", "gdrive", "gsheets", "webhook"):
        assert queue_for(platform) == platform
    assert {"control", "maintenance"} <= set(ALL_QUEUES)
    assert parse_queue_list("slack, notion") == ["slack", "notion"]
    assert parse_queue_list(None) == list(ALL_QUEUES)
    with pytest.raises(ValueError, match="unknown queue"):
        parse_queue_list("slack,slak")
