"""Trello: create cards and label them."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from pydantic import Field, StringConstraints

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, RateLimit, Result, Setting
from executors.errors import PermanentError

# Trello IDs are 24 hex digits; the looser pattern still keeps an ID from reshaping the URL path.
TrelloId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")]


class CreateCardParams(ActionParams):
    list_id: TrelloId
    name: str = Field(min_length=1, max_length=16384)
    desc: str = Field("", max_length=16384)
    label_ids: list[TrelloId] = []


class AddLabelParams(ActionParams):
    card_id: TrelloId
    label_id: TrelloId


class TrelloExecutor(Executor):
    platform = "trello"
    actions = {"create_card": CreateCardParams, "add_label": AddLabelParams}
    default_base_url = "https://api.trello.com"
    # 100 requests per 10 seconds per token.
    default_rate_limit = RateLimit(rate=10.0, burst=100)
    # OPSQ_TRELLO_API_KEY: Trello authenticates with the API key and the token together.
    extra_settings = {"api_key": Setting(secret=True, required_with_token=True, description="the API key")}
    order = 30

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
        card = self._call("POST", "/1/cards", {"idList": p.list_id, "name": p.name, "desc": p.desc,
                                               "idLabels": p.label_ids})
        if not card.get("id"):
            raise PermanentError("trello POST /1/cards: answer lacks the card id", platform=self.platform)
        return {"card_id": card["id"], "url": card.get("url") or card.get("shortUrl")}

    def undo_create_card(self, p: CreateCardParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        deleted = self._gone_ok("DELETE", f"/1/cards/{quote(result['card_id'], safe='')}")
        return {"card_id": result["card_id"], "deleted": deleted, "already_undone": not deleted}

    def do_add_label(self, p: AddLabelParams, effect: Effect = NO_EFFECT) -> Result:
        card_path = f"/1/cards/{quote(p.card_id, safe='')}"
        card = self._call("GET", card_path)
        labels = card.get("idLabels")
        # A label already on the card is not ours: leave it, and have undo leave it too.
        if isinstance(labels, list) and p.label_id in labels:
            return {"card_id": p.card_id, "label_id": p.label_id, "added": False}
        self._call("POST", f"{card_path}/idLabels", {"value": p.label_id})
        return {"card_id": p.card_id, "label_id": p.label_id, "added": True}

    def undo_add_label(self, p: AddLabelParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        if result.get("added") is False:
            return {"card_id": p.card_id, "label_id": p.label_id, "removed": False,
                    "reason": "the label was on the card before"}
        path = f"/1/cards/{quote(p.card_id, safe='')}/idLabels/{quote(p.label_id, safe='')}"
        removed = self._gone_ok("DELETE", path)
        return {"card_id": p.card_id, "label_id": p.label_id, "removed": removed,
                "already_undone": not removed}

    def check_auth(self) -> Result:
        me = self._call("GET", "/1/members/me")
        return {"ok": True, "id": me.get("id"), "username": me.get("username")}
