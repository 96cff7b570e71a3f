"""Effect keys (issue 11) for Slack, Google Drive and webhooks, against the sandbox over real HTTP: the key
travels with the call in the platform's own documented way, `find` finds the effect an earlier call left
(and nothing when there is none), `find_undone` tells an undo that took effect from one that did not, and
a call whose answer the sandbox loses (applied_*) surfaces as an ambiguous RetryableError."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from executors.base import EXACTLY_ONCE_EFFECT, Effect, Executor, ExecutorConfig
from executors.errors import RetryableError
from executors.http import HttpClient
from executors.sandbox import SandboxClient, SandboxServer
from executors.slack import EFFECT_EVENT_TYPE, LOOKUP_PAGE, SlackExecutor

TOKEN = "xoxb-effect-keys"
CHANNEL = "C0EFFECT1"
Make = Callable[..., Executor]


@pytest.fixture(autouse=True)
def sbx(control: SandboxClient) -> SandboxClient:
    control.reset()
    control.clear_requests()
    return control


@pytest.fixture(scope="module")
def http() -> Iterator[HttpClient]:
    client = HttpClient(connect_timeout_s=2, read_timeout_s=5)
    yield client
    client.close()


@pytest.fixture(scope="module")
def quick_http() -> Iterator[HttpClient]:
    """A read timeout well under an applied_timeout fault's hold."""
    client = HttpClient(connect_timeout_s=2, read_timeout_s=0.5)
    yield client
    client.close()


@pytest.fixture
def make(server: SandboxServer, http: HttpClient) -> Make:
    def build(cls: type[Executor], *, client: HttpClient | None = None, base_url: str | None = None) -> Executor:
        config = ExecutorConfig(base_url=base_url or f"{server.url}/{cls.platform}", token=TOKEN)
        return cls(config, client or http)

    return build


def since_now() -> float:
    return time.time()


def paths(sbx: SandboxClient, platform: str) -> list[str]:
    return [e["path"].removeprefix(f"/{platform}") for e in sbx.requests(platform)]


# -- Slack ---------------------------------------------------------------------------------------------


class TestSlack:
    def test_the_key_travels_as_message_metadata(self, make: Make, sbx: SandboxClient) -> None:
        slack = make(SlackExecutor)
        slack.execute("send_message", {"channel": CHANNEL, "text": "hi"}, Effect("act-1", since_now()))
        body = sbx.requests("slack")[0]["body"]
        assert body["metadata"] == {"event_type": EFFECT_EVENT_TYPE, "event_payload": {"key": "act-1"}}
        (message,) = sbx.state("slack")["messages"]
        assert message["metadata"]["event_payload"] == {"key": "act-1"}
        # No key (a direct call): nothing extra is sent.
        slack.execute("send_message", {"channel": CHANNEL, "text": "plain"})
        assert "metadata" not in sbx.requests("slack")[-1]["body"]

    def test_metadata_only_with_include_all_metadata(self, make: Make, sbx: SandboxClient, server: SandboxServer,
                                                     http: HttpClient) -> None:
        make(SlackExecutor).execute("send_message", {"channel": CHANNEL, "text": "hi"}, Effect("k", since_now()))
        url = f"{server.url}/slack/conversations.history"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        plain = http.json("GET", url, platform="slack", params={"channel": CHANNEL}, headers=auth)
        assert "metadata" not in plain["messages"][0]
        full = http.json("GET", url, platform="slack", params={"channel": CHANNEL, "include_all_metadata": "true"},
                         headers=auth)
        assert full["messages"][0]["metadata"]["event_type"] == EFFECT_EVENT_TYPE

    def test_find_send_message_found_and_not_found(self, make: Make, sbx: SandboxClient) -> None:
        slack = make(SlackExecutor)
        params = {"channel": CHANNEL, "text": "deploy done"}
        effect = Effect("act-found", since_now())
        assert slack.find("send_message", params, effect) is None
        result = slack.execute("send_message", params, effect)
        slack.execute("send_message", params, Effect("someone-else", since_now()))
        assert slack.find("send_message", params, effect) == result
        lookup = sbx.requests("slack")[-1]
        assert (lookup["method"], lookup["path"]) == ("GET", "/slack/conversations.history")
        assert lookup["query"]["include_all_metadata"] == "true" and lookup["query"]["channel"] == CHANNEL
        assert float(lookup["query"]["oldest"]) < effect.since  # type: ignore[operator]
        assert slack.find("send_message", params, Effect("never-sent", since_now())) is None
        assert SlackExecutor.guarantee("send_message") == EXACTLY_ONCE_EFFECT

    def test_find_only_looks_from_since(self, make: Make, sbx: SandboxClient) -> None:
        """`oldest` bounds the lookup: a message from long before the first ambiguous attempt is not read."""
        slack = make(SlackExecutor)
        params = {"channel": CHANNEL, "text": "hi"}
        slack.execute("send_message", params, Effect("old", since_now()))
        assert slack.find("send_message", params, Effect("old", since_now() + 3600)) is None

    def test_find_pages_through_a_busy_channel(self, make: Make, sbx: SandboxClient) -> None:
        slack = make(SlackExecutor)
        params = {"channel": CHANNEL, "text": "x"}
        effect = Effect("the-one", since_now())
        result = slack.execute("send_message", params, effect)
        # Newer messages push it past the first page: the lookup must follow the cursor to find it.
        for i in range(LOOKUP_PAGE + 5):
            slack.execute("send_message", {"channel": CHANNEL, "text": f"n{i}"}, Effect(f"other-{i}", effect.since))
        sbx.clear_requests()
        assert slack.find("send_message", params, effect) == result
        lookups = sbx.requests("slack")
        assert len(lookups) == 2 and "cursor" not in lookups[0]["query"] and lookups[1]["query"]["cursor"]
        assert len(lookups[0]["response"]["messages"]) == LOOKUP_PAGE and lookups[0]["response"]["has_more"]
        sbx.clear_requests()
        assert slack.find("send_message", params, Effect("absent", effect.since)) is None
        assert len(sbx.requests("slack")) == 2  # every page read, then None

    def test_find_a_thread_reply(self, make: Make, sbx: SandboxClient) -> None:
        slack = make(SlackExecutor)
        parent = slack.execute("send_message", {"channel": CHANNEL, "text": "parent"})
        params = {"channel": CHANNEL, "text": "reply", "thread_ts": parent["ts"]}
        effect = Effect("reply-key", since_now())
        assert slack.find("send_message", params, effect) is None
        result = slack.execute("send_message", params, effect)
        assert slack.find("send_message", params, effect) == result
        assert paths(sbx, "slack")[-1] == "/conversations.replies"

    def test_find_request_approval(self, make: Make, sbx: SandboxClient) -> None:
        slack = make(SlackExecutor)
        params = {"channel": CHANNEL, "text": "Deploy?", "approval_id": "appr-1"}
        effect = Effect("appr-action", since_now())
        assert slack.find("request_approval", params, effect) is None
        result = slack.execute("request_approval", params, effect)
        assert slack.find("request_approval", params, effect) == result
        assert SlackExecutor.guarantee("request_approval") == EXACTLY_ONCE_EFFECT

    def test_a_channel_name_cannot_be_looked_up(self, make: Make, sbx: SandboxClient) -> None:
        """conversations.history takes an ID only: a #name is at-least-once (run_attempt calls again)."""
        with pytest.raises(NotImplementedError):
            make(SlackExecutor).find("send_message", {"channel": "#ops", "text": "hi"}, Effect("k", since_now()))
        assert sbx.requests("slack") == []

    @pytest.mark.parametrize("action", ["send_message", "request_approval"])
    def test_find_undone(self, make: Make, sbx: SandboxClient, action: str) -> None:
        slack = make(SlackExecutor)
        params: dict[str, Any] = {"channel": CHANNEL, "text": "hi"}
        if action == "request_approval":
            params["approval_id"] = "a-1"
        result = slack.execute(action, params, Effect("k", since_now()))
        newer = slack.execute(action, params, Effect("k2", since_now()))
        assert slack.find_undone(action, params, result) is None  # still there
        slack.compensate(action, params, result)
        undone = slack.find_undone(action, params, result)
        assert undone == {"channel": result["channel"], "ts": result["ts"], "deleted": False,
                          "already_undone": True}
        assert slack.find_undone(action, params, newer) is None
        lookup = sbx.requests("slack")[-1]
        assert lookup["path"] == "/slack/conversations.history"
        assert lookup["query"]["latest"] == lookup["query"]["oldest"] == newer["ts"]

    def test_find_undone_a_thread_reply(self, make: Make, sbx: SandboxClient) -> None:
        slack = make(SlackExecutor)
        parent = slack.execute("send_message", {"channel": CHANNEL, "text": "parent"})
        params = {"channel": CHANNEL, "text": "reply", "thread_ts": parent["ts"]}
        result = slack.execute("send_message", params, Effect("r", since_now()))
        assert slack.find_undone("send_message", params, result) is None
        slack.compensate("send_message", params, result)
        assert slack.find_undone("send_message", params, result) is not None
        assert paths(sbx, "slack")[-1] == "/conversations.replies"

    @pytest.mark.parametrize("mode", ["applied_timeout", "applied_reset", "applied_502"])
    def test_a_lost_answer_is_ambiguous_and_then_found(self, make: Make, sbx: SandboxClient,
                                                       quick_http: HttpClient, mode: str) -> None:
        slack = make(SlackExecutor, client=quick_http)
        sbx.fault("slack", mode, times=1, match="chat.postMessage")
        params = {"channel": CHANNEL, "text": "once"}
        effect = Effect("lost-answer", since_now())
        with pytest.raises(RetryableError) as caught:
            slack.execute("send_message", params, effect)
        assert caught.value.ambiguous
        (posted,) = sbx.state("slack")["messages"]
        found = slack.find("send_message", params, effect)
        assert found is not None and found["ts"] == posted["ts"]
        assert len(sbx.state("slack")["messages"]) == 1
