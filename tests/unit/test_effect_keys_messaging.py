"""Effect keys (issue 11) for Slack, Google Drive and webhooks, against the sandbox over real HTTP: the key
travels with the call in the platform's own documented way, `find` finds the effect an earlier call left
(and nothing when there is none), `find_undone` tells an undo that took effect from one that did not, and
a call whose answer the sandbox loses (applied_*) surfaces as an ambiguous RetryableError."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from executors.base import AT_LEAST_ONCE, EXACTLY_ONCE_EFFECT, Effect, Executor, ExecutorConfig
from executors.errors import PermanentError, RetryableError
from executors.gdrive import EFFECT_PROPERTY, GDriveExecutor, effect_value, query_literal
from executors.http import HttpClient
from executors.sandbox import SandboxClient, SandboxServer
from executors.slack import EFFECT_EVENT_TYPE, LOOKUP_PAGE, SlackExecutor
from executors.webhook import WebhookExecutor

TOKEN = "xoxb-effect-keys"
CHANNEL = "C0EFFECT1"
Make = Callable[..., Executor]


# Every test talks to the sandbox: empty it before each (tests/unit/conftest.py).
pytestmark = pytest.mark.usefixtures("sbx")


@pytest.fixture
def make(server: SandboxServer, http: HttpClient) -> Make:
    def build(cls: type[Executor], *, client: HttpClient | None = None, base_url: str | None = None) -> Executor:
        # The sandbox listens on loopback, which the webhook SSRF guard refuses unless allowed.
        config = ExecutorConfig(base_url=base_url or f"{server.url}/{cls.platform}", token=TOKEN,
                                extra={"allow_hosts": "127.0.0.1/32"} if cls.platform == "webhook" else {})
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

    def test_a_channel_name_is_resolved_with_conversations_list(self, make: Make, sbx: SandboxClient) -> None:
        """conversations.history takes an ID only: a #name is looked up in conversations.list first (once per
        process: the ID is cached)."""
        slack = make(SlackExecutor)
        params = {"channel": "#ops", "text": "hi"}
        effect = Effect("by-name", since_now())
        result = slack.execute("send_message", params, effect)
        slack.execute("send_message", {"channel": "#other", "text": "x"})
        sbx.clear_requests()
        assert slack.find("send_message", params, effect) == result
        listing, lookup = sbx.requests("slack")
        assert (listing["method"], listing["path"]) == ("GET", "/slack/conversations.list")
        assert lookup["query"]["channel"] == result["channel"]
        assert slack.find("send_message", params, Effect("absent", since_now())) is None
        assert [e["path"] for e in sbx.requests("slack")][2:] == ["/slack/conversations.history"]  # cached

    def test_conversations_list_pages(self, make: Make, server: SandboxServer, http: HttpClient) -> None:
        slack = make(SlackExecutor)
        for name in ("a", "b", "c"):
            slack.execute("send_message", {"channel": f"#{name}", "text": "x"})
        url, auth = f"{server.url}/slack/conversations.list", {"Authorization": f"Bearer {TOKEN}"}
        first = http.json("GET", url, platform="slack", params={"limit": "2"}, headers=auth)
        cursor = first["response_metadata"]["next_cursor"]
        second = http.json("GET", url, platform="slack", params={"limit": "2", "cursor": cursor}, headers=auth)
        assert [c["name"] for c in first["channels"] + second["channels"]] == ["a", "b", "c"]
        assert second["response_metadata"]["next_cursor"] == ""

    @pytest.mark.parametrize("channel", ["U0123ABCD", "#nowhere"])
    def test_what_cannot_be_resolved_is_at_least_once(self, make: Make, sbx: SandboxClient, channel: str) -> None:
        """A user's ID (a DM) or a name the token cannot see: NotImplementedError, run_attempt calls again."""
        with pytest.raises(NotImplementedError):
            make(SlackExecutor).find("send_message", {"channel": channel, "text": "hi"}, Effect("k", since_now()))

    def test_a_token_that_cannot_list_channels_is_at_least_once(self, make: Make, sbx: SandboxClient) -> None:
        sbx.fault("slack", "auth", match="conversations.list")
        with pytest.raises(NotImplementedError, match="channels:read"):
            make(SlackExecutor).find("send_message", {"channel": "#ops", "text": "hi"}, Effect("k", since_now()))

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


# -- Google Drive --------------------------------------------------------------------------------------


def drive_list(server: SandboxServer, http: HttpClient, q: str, **params: str) -> dict[str, Any]:
    return http.json("GET", f"{server.url}/gdrive/drive/v3/files", platform="gdrive", params={"q": q, **params},
                     headers={"Authorization": f"Bearer {TOKEN}"})


class TestDriveQuery:
    """The emulator reads Drive's query language, so a lookup that matched too much (or nothing) would show."""

    def test_app_properties_query_selects_exactly_the_keyed_file(self, make: Make, server: SandboxServer,
                                                                  http: HttpClient) -> None:
        drive = make(GDriveExecutor)
        keyed = drive.execute("create_file", {"name": "a"}, Effect("key-a", since_now()))
        drive.execute("create_file", {"name": "b"}, Effect("key-b", since_now()))
        drive.execute("create_file", {"name": "key-a"})  # the key as a name: no substring match
        q = f"appProperties has {{ key='{EFFECT_PROPERTY}' and value='key-a' }}"
        assert [f["id"] for f in drive_list(server, http, q)["files"]] == [keyed["file_id"]]
        assert drive_list(server, http, f"appProperties has {{ key='{EFFECT_PROPERTY}' and value='key' }}")[
            "files"] == []
        assert drive_list(server, http, f"properties has {{ key='{EFFECT_PROPERTY}' and value='key-a' }}")[
            "files"] == []  # properties (public) and appProperties (private to the app) are separate
        names = {f["name"] for f in drive_list(server, http, "name contains 'a' and not name = 'key-a'")["files"]}
        assert names == {"a"}
        assert len(drive_list(server, http, "(name = 'a' or name = 'b') and trashed = false")["files"]) == 2

    @pytest.mark.parametrize("q", ["opsq_effect", "appProperties has { key='x' }", "name = 'a' and",
                                   "fullText contains 'x'", "trashed = maybe", "name = 'unterminated"])
    def test_a_query_it_does_not_understand_is_a_400(self, server: SandboxServer, http: HttpClient,
                                                     q: str) -> None:
        with pytest.raises(PermanentError) as caught:
            drive_list(server, http, q)
        assert caught.value.status == 400

    def test_quotes_are_escaped_both_ways(self, make: Make, server: SandboxServer, http: HttpClient) -> None:
        drive = make(GDriveExecutor)
        key = "it's a \\ key"
        made = drive.execute("create_file", {"name": "q"}, Effect(key, since_now()))
        assert drive.find("create_file", {"name": "q"}, Effect(key, since_now())) == made
        assert query_literal(key) == "'it\\'s a \\\\ key'"

    def test_pages(self, make: Make, server: SandboxServer, http: HttpClient) -> None:
        drive = make(GDriveExecutor)
        for i in range(5):
            drive.execute("create_file", {"name": f"f{i}"})
        first = drive_list(server, http, "trashed = false", pageSize="3")
        second = drive_list(server, http, "trashed = false", pageSize="3", pageToken=first["nextPageToken"])
        assert [f["name"] for f in first["files"] + second["files"]] == [f"f{i}" for i in range(5)]
        assert "nextPageToken" not in second


class TestDrive:
    def test_the_key_travels_as_app_properties(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        drive.execute("create_file", {"name": "report"}, Effect("act-9", since_now()))
        assert sbx.requests("gdrive")[0]["body"]["appProperties"] == {EFFECT_PROPERTY: "act-9"}
        assert sbx.state("gdrive")["files"][0]["appProperties"] == {EFFECT_PROPERTY: "act-9"}
        drive.execute("create_file", {"name": "plain"})
        assert "appProperties" not in sbx.requests("gdrive")[-1]["body"]

    def test_a_long_key_travels_as_its_digest(self, make: Make, sbx: SandboxClient) -> None:
        """Drive caps a property at 124 bytes (the emulator refuses more): a long idempotency key is hashed."""
        drive = make(GDriveExecutor)
        key = "idem-" + "x" * 200
        made = drive.execute("create_file", {"name": "long"}, Effect(key, since_now()))
        value = sbx.state("gdrive")["files"][0]["appProperties"][EFFECT_PROPERTY]
        assert value == effect_value(key) and value.startswith("sha256:")
        assert drive.find("create_file", {"name": "long"}, Effect(key, since_now())) == made

    def test_find_create_file_found_and_not_found(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        params = {"name": "report.pdf", "mime_type": "application/pdf"}
        effect = Effect("act-found", since_now())
        assert drive.find("create_file", params, effect) is None
        made = drive.execute("create_file", params, effect)
        drive.execute("create_file", params, Effect("other", since_now()))
        assert drive.find("create_file", params, effect) == made
        lookup = sbx.requests("gdrive")[-1]
        assert (lookup["method"], lookup["path"]) == ("GET", "/gdrive/drive/v3/files")
        assert lookup["query"]["q"] == (f"appProperties has {{ key='{EFFECT_PROPERTY}' and value='act-found' }} "
                                        "and trashed = false")
        assert GDriveExecutor.guarantee("create_file") == EXACTLY_ONCE_EFFECT

    def test_a_trashed_file_is_not_found(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        effect = Effect("act-trashed", since_now())
        made = drive.execute("create_file", {"name": "t"}, effect)
        drive.execute("delete_file", {"file_id": made["file_id"]})  # trashes it
        assert drive.find("create_file", {"name": "t"}, effect) is None

    def test_find_undone_create_file(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        params = {"name": "u"}
        made = drive.execute("create_file", params, Effect("k", since_now()))
        assert drive.find_undone("create_file", params, made) is None
        drive.compensate("create_file", params, made)
        assert drive.find_undone("create_file", params, made) == {"file_id": made["file_id"], "deleted": False,
                                                                   "already_undone": True}
        assert sbx.requests("gdrive")[-1]["status"] == 404  # the lookup's 404 is the answer, not a failure

    def test_find_delete_file(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        made = drive.execute("create_file", {"name": "d"})
        trash = {"file_id": made["file_id"]}
        purge = {"file_id": made["file_id"], "permanent": True}
        assert drive.find("delete_file", trash, Effect("d1", since_now())) is None
        assert drive.find("delete_file", purge, Effect("d2", since_now())) is None
        trashed = drive.execute("delete_file", trash)
        assert drive.find("delete_file", trash, Effect("d1", since_now())) == trashed
        assert drive.find("delete_file", purge, Effect("d2", since_now())) is None  # trashed is not gone
        purged = drive.execute("delete_file", purge)
        assert drive.find("delete_file", purge, Effect("d2", since_now())) == purged
        assert GDriveExecutor.guarantee("delete_file") == EXACTLY_ONCE_EFFECT

    def test_find_undone_delete_file(self, make: Make, sbx: SandboxClient) -> None:
        drive = make(GDriveExecutor)
        made = drive.execute("create_file", {"name": "r"})
        params = {"file_id": made["file_id"]}
        result = drive.execute("delete_file", params)
        assert drive.find_undone("delete_file", params, result) is None  # still in the trash
        drive.compensate("delete_file", params, result)
        assert drive.find_undone("delete_file", params, result) == {"file_id": made["file_id"], "restored": True}
        purge = {"file_id": made["file_id"], "permanent": True}
        assert drive.find_undone("delete_file", purge, {})["restored"] is False  # type: ignore[index]

    @pytest.mark.parametrize("mode", ["applied_timeout", "applied_reset", "applied_502"])
    def test_a_lost_answer_is_ambiguous_and_then_found(self, make: Make, sbx: SandboxClient,
                                                       quick_http: HttpClient, mode: str) -> None:
        drive = make(GDriveExecutor, client=quick_http)
        sbx.fault("gdrive", mode, times=1, latency_ms=3000)
        effect = Effect("lost-file", since_now())
        with pytest.raises(RetryableError) as caught:
            drive.execute("create_file", {"name": "once"}, effect)
        assert caught.value.ambiguous
        (made,) = sbx.state("gdrive")["files"]
        assert drive.find("create_file", {"name": "once"}, effect) == {
            "file_id": made["id"], "name": "once", "mime_type": "application/octet-stream"}


# -- Webhook -------------------------------------------------------------------------------------------


class TestWebhook:
    def url(self, server: SandboxServer, path: str = "hooks/deploy") -> str:
        return f"{server.url}/webhook/{path}"

    def test_the_key_travels_as_the_idempotency_key_header(self, make: Make, server: SandboxServer,
                                                           sbx: SandboxClient) -> None:
        hook = make(WebhookExecutor)
        hook.execute("post", {"url": self.url(server), "json": {"v": 1}}, Effect("act-w", since_now()))
        (delivered,) = sbx.state("webhook")["received"]
        assert delivered["idempotency_key"] == "act-w"
        hook.execute("post", {"url": self.url(server), "json": {"v": 2}})  # no key: no header
        assert "idempotency_key" not in sbx.state("webhook")["received"][-1]

    def test_a_repeated_key_is_replayed_not_delivered_again(self, make: Make, server: SandboxServer,
                                                            sbx: SandboxClient) -> None:
        hook = make(WebhookExecutor)
        params = {"url": self.url(server), "json": {"deploy": 42}}
        effect = Effect("act-replay", since_now())
        first = hook.execute("post", params, effect)
        second = hook.execute("post", params, effect)
        assert first == second == {"status": 200, "body": {"ok": True, "received": {"deploy": 42}}}
        state = sbx.state("webhook")
        assert len(state["received"]) == 1 and state["replays"] == {"act-replay": 1}
        assert [e["replayed"] for e in sbx.requests("webhook")] == [False, True]

    def test_the_same_key_for_another_request_is_refused(self, make: Make, server: SandboxServer,
                                                         sbx: SandboxClient) -> None:
        hook = make(WebhookExecutor)
        effect = Effect("act-reuse", since_now())
        hook.execute("post", {"url": self.url(server), "json": {"a": 1}}, effect)
        with pytest.raises(PermanentError) as caught:
            hook.execute("post", {"url": self.url(server), "json": {"a": 2}}, effect)
        assert caught.value.status == 422 and len(sbx.state("webhook")["received"]) == 1

    def test_an_actions_own_idempotency_key_wins(self, make: Make, server: SandboxServer,
                                                 sbx: SandboxClient) -> None:
        make(WebhookExecutor).execute("post", {"url": self.url(server), "json": {},
                                               "headers": {"idempotency-key": "theirs"}}, Effect("ours", 1.0))
        assert sbx.state("webhook")["received"][0]["idempotency_key"] == "theirs"

    def test_guarantee_is_at_least_once_and_there_is_no_lookup(self, make: Make, server: SandboxServer) -> None:
        assert WebhookExecutor.guarantee("post") == AT_LEAST_ONCE
        with pytest.raises(NotImplementedError):
            make(WebhookExecutor).find("post", {"url": self.url(server)}, Effect("k", since_now()))
        with pytest.raises(NotImplementedError):
            make(WebhookExecutor).find_undone("post", {"url": self.url(server)}, {})

    def test_the_undo_carries_its_own_key(self, make: Make, server: SandboxServer, sbx: SandboxClient) -> None:
        hook = make(WebhookExecutor)
        params = {"url": self.url(server), "json": {"a": 1}, "compensation_url": self.url(server, "undo")}
        result = hook.execute("post", params, Effect("act-u", since_now()))
        hook.compensate("post", params, result, Effect("act-u:undo", since_now()))
        keys = [r["idempotency_key"] for r in sbx.state("webhook")["received"]]
        assert keys == ["act-u", "act-u:undo"]

    @pytest.mark.parametrize("mode", ["applied_timeout", "applied_reset", "applied_502"])
    def test_a_lost_answer_then_the_repeat_is_one_delivery(self, make: Make, server: SandboxServer,
                                                           sbx: SandboxClient, quick_http: HttpClient,
                                                           mode: str) -> None:
        """The repeat call with the same key IS the reconciliation: the receiver answers it, once delivered."""
        hook = make(WebhookExecutor, client=quick_http)
        sbx.fault("webhook", mode, times=1, latency_ms=3000)
        params = {"url": self.url(server), "json": {"n": 1}}
        effect = Effect("lost-hook", since_now())
        with pytest.raises(RetryableError) as caught:
            hook.execute("post", params, effect)
        assert caught.value.ambiguous
        again = hook.execute("post", params, effect)
        assert again == {"status": 200, "body": {"ok": True, "received": {"n": 1}}}
        assert len(sbx.state("webhook")["received"]) == 1
        lost, replay = sbx.requests("webhook")
        assert lost["answer"] == "lost" and lost["applied"] is True and replay["replayed"] is True
