"""Dead letters on real Redis, workers and databases: exhausted retries land there, `opsq dlq replay`
runs the action again, two operators replaying at once make one action, a failed replay gives the dead
letter back."""

from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner

from workers.cli.main import cli, register
from workers.client import ActionHandle, submit_action
from workers.errors import SubmitError
from workers.ops import dlq
from workers.store import actions as store
from workers.store import audit

pytestmark = pytest.mark.integration


def _dead_letter(action_id: str) -> int:
    store.create(action_id=action_id, platform="noop", action="noop", params={"echo": action_id},
                 priority="normal", queue="noop", max_attempts=1)
    store.mark_failed(action_id, 1, "boom", "internal")
    (dead,) = [d for d in store.dead_letters() if d.action_id == action_id]
    return dead.id


def test_exhausted_retries_land_in_dead_letters_and_replay_runs_again(opsq_env, workers_started,
                                                                      sandbox_client):
    workers_started(opsq_env())
    sandbox_client.fault("gsheets", "error", status=503, times=3)  # refused, not ambiguous (a 502 is looked up)
    view = submit_action("gsheets", "append_row", {"sheet": "s", "values": [1]}, max_attempts=3).wait(30)
    assert view.status == "failed" and view.attempts == 3 and view.error_kind == "retryable"
    (dead,) = store.dead_letters()
    assert dead.action_id == view.id and dead.attempts == 3

    register()
    out = CliRunner().invoke(cli, ["dlq", "list", "--json"])
    assert out.exit_code == 0 and view.id in out.output
    out = CliRunner().invoke(cli, ["dlq", "replay", str(dead.id)])
    assert out.exit_code == 0, out.output
    new_id = out.output.strip().split()[-1]
    replayed = store.get(new_id)
    final = ActionHandle(new_id).wait(30)
    assert final.status == "succeeded" and replayed.replay_of == view.id
    assert [r["status"] for r in sandbox_client.requests(platform="gsheets")] == [503, 503, 503, 200]
    assert store.dead_letters() == []  # replayed ones are hidden unless --all
    again = CliRunner().invoke(cli, ["dlq", "replay", str(dead.id)])
    assert again.exit_code != 0 and "already replayed" in again.output


def test_two_replays_of_one_dead_letter_make_one_action(opsq_env, monkeypatch):
    dl_id = _dead_letter("dead1")
    submit = dlq.submit_action

    def slow_submit(*args, **kwargs):  # the window in which a second operator replays it too
        time.sleep(0.3)
        return submit(*args, **kwargs)

    monkeypatch.setattr(dlq, "submit_action", slow_submit)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def replay() -> None:
        barrier.wait()
        try:
            outcomes.append(dlq.replay(dl_id, actor="t").id)
        except SubmitError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=replay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replays = [a for a in store.list_recent(limit=20) if a.replay_of == "dead1"]
    assert len(replays) == 1, outcomes
    assert sorted(outcomes, key=lambda o: o.startswith("dead letter")) == [
        replays[0].id, f"dead letter {dl_id} was already replayed (its replay is being submitted now)"]
    assert store.dead_letter(dl_id).replayed_as == replays[0].id
    assert [e["action"] for e in audit.entries()].count("dlq_replay") == 1


def test_a_failed_replay_gives_the_dead_letter_back(opsq_env, monkeypatch):
    dl_id = _dead_letter("dead2")
    submit = dlq.submit_action

    def broker_down(*args, **kwargs):
        raise SubmitError("could not enqueue: broker down")

    monkeypatch.setattr(dlq, "submit_action", broker_down)
    with pytest.raises(SubmitError, match="broker down"):
        dlq.replay(dl_id)
    assert store.dead_letter(dl_id).replayed_at is None
    monkeypatch.setattr(dlq, "submit_action", submit)
    handle = dlq.replay(dl_id)
    dead = store.dead_letter(dl_id)
    assert dead.replayed_as == handle.id and dead.replayed_at is not None
    with pytest.raises(SubmitError, match=f"already replayed as action {handle.id}"):
        dlq.replay(dl_id)
