"""Trello: create cards and label them.

Effect keys (issue 11): Trello has no idempotency key, no searchable metadata a REST client can write
without a Power-Up (pluginData is written by Power-Ups only; custom fields need the Custom Fields Power-Up
and a field defined on each board), and its /1/search index lags behind writes. What a client can write and
read back at once is the card's own description: a created card carries a last line `opsq-effect: KEY`, and
the lookup reads the open cards of the list it was created in (GET /1/lists/{id}/cards), a consistent read.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field, StringConstraints

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, RateLimit, Result, Setting, example
from executors.errors import PermanentError

#: The card description line that carries the effect key: how a card whose creation answer was lost is found.
MARKER_PREFIX = "opsq-effect: "
#: Trello's limit on a card description.
DESC_LIMIT = 16384
# An effect key is at most 200 characters (the idempotency key's limit): the marker line and its blank line.
_MARKER_ROOM = len("\n\n" + MARKER_PREFIX) + 200

# Trello IDs are 24 hex digits; the looser pattern still keeps an ID from reshaping the URL path.
TrelloId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")]


class CreateCardParams(ActionParams):
    """Create a card in a list, with a description and labels."""

    model_config = example({"list_id": "list1", "name": "Fix the login page"})

    list_id: TrelloId
    name: str = Field(min_length=1, max_length=16384)
    # Room is kept for the effect marker line, so a description the user gives never pushes it past the limit.
    desc: str = Field("", max_length=DESC_LIMIT - _MARKER_ROOM)
    label_ids: list[TrelloId] = []


class AddLabelParams(ActionParams):
    """Put a label on a card (a label already there is left as it is)."""

    model_config = example({"card_id": "card1", "label_id": "label1"})

    card_id: TrelloId
    label_id: TrelloId


class TrelloExecutor(Executor):
    platform = "trello"
    actions = {"create_card": CreateCardParams, "add_label": AddLabelParams}
    idempotent = frozenset({"add_label"})  # a label already on the card is left as it is (do_add_label)
    default_base_url = "https://api.trello.com"
    # 100 requests per 10 seconds per token.
    default_rate_limit = RateLimit(rate=10.0, burst=100)
    # OPSQ_TRELLO_API_KEY: Trello authenticates with the API key and the token together.
    extra_settings = {"api_key": Setting(secret=True, required_with_token=True, description="the API key")}
    order = 30
    # Trello's limits are per API key and per token (`--per token`); a board's list or a card can be limited too.
    limit_keys = {"list": "list_id", "card": "card_id"}

    def _headers(self) -> dict[str, str]:
        # The header, not the key/token query parameters, so credentials never land in URLs or access logs.
        parts = []
        api_key = self.config.extra.get("api_key")
        if api_key:
            parts.append(f'oauth_consumer_key="{api_key}"')
        if self.config.token:
            parts.append(f'oauth_token="{self.config.token}"')
        return {"Authorization": "OAuth " + ", ".join(parts)} if parts else {}

    def _gone_ok(self, method: str, path: str) -> bool:
        """Runs an undo request; False when the object was already gone (404), which undo accepts."""
        try:
            self._call(method, path)
        except PermanentError as exc:
            if exc.status != 404:
                raise
            return False
        return True

    def do_create_card(self, p: CreateCardParams, effect: Effect = NO_EFFECT) -> Result:
        desc = p.desc
        if effect.key is not None:
            desc = f"{desc}\n\n{marker(effect.key)}" if desc else marker(effect.key)
        card = self._call("POST", "/1/cards", {"idList": p.list_id, "name": p.name, "desc": desc,
                                               "idLabels": p.label_ids})
        if not card.get("id"):
            raise PermanentError("trello POST /1/cards: answer lacks the card id", platform=self.platform)
        return {"card_id": card["id"], "url": card.get("url") or card.get("shortUrl")}

    def find_create_card(self, p: CreateCardParams, effect: Effect) -> Result | None:
        """The card an earlier attempt created, by the marker line of its description, among the list's open
        cards. A card archived or moved to another list in the meantime is not seen (then a second one is made)."""
        assert effect.key is not None
        line = marker(effect.key)
        data = self._call("GET", f"/1/lists/{quote(p.list_id, safe='')}/cards",
                          params={"fields": "name,desc,url,shortUrl"})
        cards: list[Any] = data.get("data") or []
        for card in cards:
            if isinstance(card, dict) and card.get("id") and line in str(card.get("desc") or "").splitlines():
                return {"card_id": card["id"], "url": card.get("url") or card.get("shortUrl")}
        return None

    def undo_create_card(self, p: CreateCardParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        deleted = self._gone_ok("DELETE", f"/1/cards/{quote(result['card_id'], safe='')}")
        return {"card_id": result["card_id"], "deleted": deleted, "already_undone": not deleted}

    def find_undone_create_card(self, p: CreateCardParams, result: Result) -> Result | None:
        """A delete whose answer was lost: the card gone (404) is the undo done; still there, None."""
        if self._exists(f"/1/cards/{quote(result['card_id'], safe='')}", {"fields": "id"}) is not None:
            return None
        return {"card_id": result["card_id"], "deleted": False, "already_undone": True}

    def do_add_label(self, p: AddLabelParams, effect: Effect = NO_EFFECT) -> Result:
        card_path = f"/1/cards/{quote(p.card_id, safe='')}"
        card = self._call("GET", card_path)
        labels = card.get("idLabels")
        # A label already on the card is not ours: leave it, and have undo leave it too.
        if isinstance(labels, list) and p.label_id in labels:
            return {"card_id": p.card_id, "label_id": p.label_id, "added": False}
        self._call("POST", f"{card_path}/idLabels", {"value": p.label_id})
        return {"card_id": p.card_id, "label_id": p.label_id, "added": True}

    def find_add_label(self, p: AddLabelParams, effect: Effect) -> Result | None:
        """The label on the card is the effect (adding it again would be refused, 400, not doubled). Whether
        this action put it there decides what undo removes: the card's addLabelToCard actions since the first
        attempt began say so (the ones before that are not ours)."""
        card_path = f"/1/cards/{quote(p.card_id, safe='')}"
        card = self._call("GET", card_path, params={"fields": "idLabels"})
        labels = card.get("idLabels")
        if not isinstance(labels, list) or p.label_id not in labels:
            return None
        params = {"filter": "addLabelToCard", "fields": "data,date", "limit": "1000"}
        if effect.since is not None:
            # A second early, for clock skew between Redis (the since) and Trello (the action dates).
            params["since"] = datetime.fromtimestamp(effect.since - 1, UTC).isoformat(timespec="milliseconds")
        actions: list[Any] = self._call("GET", f"{card_path}/actions", params=params).get("data") or []
        added = any(isinstance(a, dict) and ((a.get("data") or {}).get("label") or {}).get("id") == p.label_id
                    for a in actions)
        return {"card_id": p.card_id, "label_id": p.label_id, "added": added}

    def undo_add_label(self, p: AddLabelParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        if result.get("added") is False:
            return {"card_id": p.card_id, "label_id": p.label_id, "removed": False,
                    "reason": "the label was on the card before"}
        path = f"/1/cards/{quote(p.card_id, safe='')}/idLabels/{quote(p.label_id, safe='')}"
        removed = self._gone_ok("DELETE", path)
        return {"card_id": p.card_id, "label_id": p.label_id, "removed": removed,
                "already_undone": not removed}

    def find_undone_add_label(self, p: AddLabelParams, result: Result) -> Result | None:
        """A label removal whose answer was lost: done when the label is off the card, or the card is gone."""
        if result.get("added") is False:
            return self.undo_add_label(p, result)  # nothing was to be removed: no call, same answer
        card = self._exists(f"/1/cards/{quote(p.card_id, safe='')}", {"fields": "idLabels"})
        if card is not None and p.label_id in (card.get("idLabels") or []):
            return None
        return {"card_id": p.card_id, "label_id": p.label_id, "removed": False, "already_undone": True}

    def _exists(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        """GET an object; None when Trello says it does not exist (404)."""
        try:
            return self._call("GET", path, params=params)
        except PermanentError as exc:
            if exc.status != 404:
                raise
            return None

    def check_auth(self) -> Result:
        me = self._call("GET", "/1/members/me")
        return {"ok": True, "id": me.get("id"), "username": me.get("username")}


def marker(key: str) -> str:
    """The description line that carries an effect key. A key that could break the line (a newline, a
    control character) is carried as its SHA-256, so one line always holds one whole key."""
    if key.isprintable() and key.strip() == key:
        return MARKER_PREFIX + key
    return MARKER_PREFIX + "sha256:" + hashlib.sha256(key.encode()).hexdigest()
