"""workers.ops.quarantine.requeue on a real Redis (its move is a Lua script, which fakeredis lacks here)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_consumer import _message, _record
from workers.broker_transport import QUARANTINE_KEY
from workers.consumer import EXECUTE_ACTION
from workers.ops import quarantine
from workers.store import audit

pytestmark = pytest.mark.integration


def _audited() -> list[tuple[str, dict[str, Any]]]:
    return [(e["action"], e["detail"]) for e in audit.entries(action="quarantine_requeue")]


def test_requeue_moves_an_item_once_and_leaves_the_rest(opsq_env_sqlite, redis_client):
    r = redis_client
    bad = {"queue": "noop", "reason": "not JSON", "bytes": 3, "head": ""}
    for item in (_record(), bad):  # the bad one is the newest: index 0
        r.lpush(QUARANTINE_KEY, json.dumps(item))
    with pytest.raises(quarantine.OpsqError, match="item 0 cannot be requeued: it is not a message"):
        quarantine.requeue(0, actor="me", client=r)
    with pytest.raises(quarantine.OpsqError, match="no quarantined item 5"):
        quarantine.requeue(5, actor="me", client=r)
    with pytest.raises(quarantine.OpsqError, match="or --all"):
        quarantine.requeue(None, actor="me", client=r)
    done = quarantine.requeue(every=True, actor="me", client=r)
    assert [m["id"] for m in done.requeued] == ["a1"] and [i for i, _ in done.refused] == [0]
    assert r.lrange("noop\x06\x166", 0, -1) == [_message().encode()]
    assert r.llen(QUARANTINE_KEY) == 1
    assert _audited() == [("quarantine_requeue", {"requeued": [{"queue": "noop", "task": EXECUTE_ACTION, "id": "a1"}]})]
    assert not quarantine.requeue(every=True, actor="me", client=r).requeued and len(_audited()) == 1
