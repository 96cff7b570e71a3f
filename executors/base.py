"""The Executor interface: what every platform module implements. Knows nothing of Celery."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from executors.errors import InvalidParams
from executors.http import HttpClient


class ActionParams(BaseModel):
    """Base of every action's params schema: unknown fields are refused, not silently dropped.

    Each action's model says what the action does in its docstring's first line and gives a working example
    (`example(...)`): `opsq actions` shows both with the JSON schema, and a test submits every example."""

    model_config = ConfigDict(extra="forbid")


def example(params: dict[str, Any]) -> ConfigDict:
    """A params model's config carrying its example, as the JSON schema's `examples` (pydantic's
    json_schema_extra); pydantic merges it with the base's `extra="forbid"`."""
    return ConfigDict(json_schema_extra={"examples": [params]})


@dataclass(frozen=True)
class ExecutorConfig:
    base_url: str
    token: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    extra: Mapping[str, str] = field(default_factory=dict)


Result = dict[str, Any]


@dataclass(frozen=True)
class Effect:
    """What makes an action's effect findable again on the platform, whatever happened to the answer.

    `key` is stable across the attempts, redeliveries and replays of one action (its id, or its idempotency
    key when it has one); each executor carries it to the platform in the platform's own documented way
    (a header, metadata, a property) where the API allows. `since` is when the first attempt that may have
    acted began (Unix seconds, Redis' clock): a lookup searches from there. No key: nothing is carried (a
    direct call, as in the executors' own tests)."""

    key: str | None = None
    since: float | None = None


NO_EFFECT = Effect()

#: An action's guarantee when its answer is lost: its effect can be looked up before a repeat call
#: (a find_<action> method), or the repeat call may apply it twice.
EXACTLY_ONCE_EFFECT = "exactly-once-effect"
AT_LEAST_ONCE = "at-least-once"


class RateLimit(NamedTuple):
    """A platform's default token bucket, shared by every worker: `rate` calls per second on average,
    bursts up to `burst`. rate 0 means unlimited. OPSQ_RATE_LIMITS overrides it per platform."""

    rate: float
    burst: int = 1


@dataclass(frozen=True)
class Setting:
    """One of a platform's own settings, beyond its base URL and token (Notion's API version, Trello's API
    key): read from OPSQ_<PLATFORM>_<NAME> and given to the executor as `config.extra[name]` (left out of
    `extra` while unset)."""

    default: str | None = None
    #: a credential: masked by validate-env and scrubbed from logs, like the token
    secret: bool = False
    #: validate-env warns when the platform's token is set and this is not (Trello's API key)
    required_with_token: bool = False
    #: what it is, for messages: "the API key"
    description: str = ""
    #: for a secret a person chooses (a password, a signing key): what may be shown of its value, never the value
    #: (`opsq validate-env` shows it instead of the mask; `opsq test-auth --workers` shows it beside the value's
    #: fingerprint, which is keyed by a nonce printed nowhere, so a fingerprint cannot be checked offline, guessable
    #: value or not, and a rotated key is told apart). Raises ValueError, naming what is wrong, on a malformed value.
    shown: Callable[[str], str] | None = None
    #: the value as `opsq test-auth --workers` fingerprints it, when two spellings mean one configuration (a JSON
    #: object's spacing and key order); None: the value as set. Raises ValueError on a malformed value (then the
    #: value as set is fingerprinted).
    canonical: Callable[[str], str] | None = None


@dataclass(frozen=True)
class ActionDoc:
    """An action as `opsq actions` shows it: its params model's docstring (first line), JSON schema and example."""

    platform: str
    action: str
    description: str
    schema: dict[str, Any]
    example: dict[str, Any]

    @property
    def required(self) -> list[str]:
        return list(self.schema.get("required", []))


class Executor(ABC):
    """One platform. `actions` maps each action name to its params schema.

    `execute` returns a JSON-serialisable result; `compensate` undoes what `execute` did, given the
    params and the result it returned (rollback uses it). Both raise executors.errors types only.
    """

    platform: ClassVar[str]
    actions: ClassVar[dict[str, type[ActionParams]]]
    #: actions whose effect cannot be undone (compensate is a no-op for them)
    irreversible: ClassVar[frozenset[str]] = frozenset()
    #: actions whose repeat leaves the platform as one call left it (they set values, or add or remove by the
    #: object's own id), whatever effect key the repeat carries. Any other action, run again as a new action
    #: (a dead letter's replay: a new id, so a new effect key the platform has never seen), may act twice if
    #: the first run did act. Declared from the effect-key analysis (docs/ARCHITECTURE.md, "The effect key").
    idempotent: ClassVar[frozenset[str]] = frozenset()

    # The platform's facts. The registry (executors.registry) finds this class, and the queue, the
    # OPSQ_<PLATFORM>_* settings, the health checks, the CLI and the sandbox follow from these:
    #: the real service's API root; OPSQ_<PLATFORM>_BASE_URL, else OPSQ_PLATFORM_BASE_URL + /<platform>, replace it
    default_base_url: ClassVar[str] = ""
    #: the shared rate limit unless OPSQ_RATE_LIMITS names the platform
    default_rate_limit: ClassVar[RateLimit] = RateLimit(rate=0)
    #: False for a platform that calls no service (noop): no base URL or token settings, no auth check
    remote: ClassVar[bool] = True
    #: whether actions fail without OPSQ_<PLATFORM>_TOKEN: validate-env warns when it is unset and
    #: `opsq test-auth` (with no argument) tries the platform
    needs_token: ClassVar[bool] = True
    #: more settings: OPSQ_<PLATFORM>_<NAME> -> config.extra[name]
    extra_settings: ClassVar[Mapping[str, Setting]] = {}
    #: where the platform comes in listings (health, circuit status, queues): lower first, then by name
    order: ClassVar[int] = 100
    #: the kinds of key a rate or concurrency limit may be per (`opsq ratelimit set slack --per channel`) that are
    #: not a param's own name, each naming the param (or setting) it is read from: {"spreadsheet": "spreadsheet_id"}.
    #: Every param name of every action, `token` and the extra settings' names are kinds too (limit_key_sources).
    limit_keys: ClassVar[Mapping[str, str]] = {}

    def __init__(self, config: ExecutorConfig, http: HttpClient) -> None:
        self.config = config
        self.http = http

    @classmethod
    def params_model(cls, action: str) -> type[ActionParams]:
        schema = cls.actions.get(action)
        if schema is None:
            known = ", ".join(sorted(cls.actions))
            raise InvalidParams(f"unknown action {cls.platform}.{action} (known: {known})")
        return schema

    @classmethod
    def describe(cls, action: str) -> ActionDoc:
        """What `opsq actions` shows of an action, all read from its params model (the one `validate` uses)."""
        model = cls.params_model(action)
        extra = model.model_config.get("json_schema_extra")
        examples = extra.get("examples") if isinstance(extra, dict) else None
        # From the config rather than the schema, which sorts the example's keys: shown in the author's order.
        first = examples[0] if isinstance(examples, list) and examples else {}
        return ActionDoc(platform=cls.platform, action=action,
                         description=(model.__doc__ or "").strip().split("\n")[0],
                         schema=model.model_json_schema(by_alias=True),
                         example=dict(first) if isinstance(first, dict) else {})

    @classmethod
    def validate(cls, action: str, params: Mapping[str, Any]) -> ActionParams:
        schema = cls.params_model(action)
        try:
            return schema.model_validate(dict(params))
        except ValidationError as exc:
            raise InvalidParams(f"invalid params for {cls.platform}.{action}: {format_validation(exc)}") from None

    def execute(self, action: str, params: Mapping[str, Any], effect: Effect = NO_EFFECT) -> Result:
        model = self.validate(action, params)
        handler: Callable[[Any, Effect], Result] = getattr(self, f"do_{action}")
        return handler(model, effect)

    def compensate(self, action: str, params: Mapping[str, Any], result: Mapping[str, Any],
                   effect: Effect = NO_EFFECT) -> Result | None:
        model = self.validate(action, params)
        handler = getattr(self, f"undo_{action}", None)
        if handler is None:
            return None
        undone: Result = handler(model, dict(result), effect)
        return undone

    @classmethod
    def limit_key_sources(cls) -> dict[str, str]:
        """Every kind of key a limit may be per -> the param or setting its value is read from: the declared
        `limit_keys`, each action param's own name, and for a remote platform `token` and its extra settings
        (a setting is where a param left unset falls back: gsheets' default spreadsheet)."""
        sources: dict[str, str] = {}
        for schema in cls.actions.values():
            for name, info in schema.model_fields.items():
                key = info.alias or name  # the params as submitted carry the alias (webhook's `json`)
                sources[key] = key
        if cls.remote:
            sources["token"] = "token"
            for name in cls.extra_settings:
                sources.setdefault(name, name)
        sources.update(cls.limit_keys)
        return sources

    @classmethod
    def guarantee(cls, action: str, extra: Mapping[str, str] | None = None) -> str:
        """EXACTLY_ONCE_EFFECT when a lost answer can be reconciled (the action has a finder), else AT_LEAST_ONCE.
        `extra` is the platform's settings (`config.extra`): a platform whose lookup depends on them (Notion's
        effect property, Sheets' marker column) answers for those settings; None means its defaults."""
        return EXACTLY_ONCE_EFFECT if callable(getattr(cls, f"find_{action}", None)) else AT_LEAST_ONCE

    def find(self, action: str, params: Mapping[str, Any], effect: Effect) -> Result | None:
        """The effect of an earlier attempt whose answer was lost, looked up on the platform by `effect.key`:
        the result `execute` would have returned, or None when it does not exist (the call never acted).
        Raises NotImplementedError for an action with no way to look its effect up (AT_LEAST_ONCE)."""
        model = self.validate(action, params)
        finder = getattr(self, f"find_{action}", None)
        if finder is None or effect.key is None:
            raise NotImplementedError(f"{self.platform}.{action} cannot be looked up")
        found: Result | None = finder(model, effect)
        return found

    def find_undone(self, action: str, params: Mapping[str, Any], result: Mapping[str, Any]) -> Result | None:
        """Whether an undo whose answer was lost took effect: the undo's result when the object it removes is
        gone (a 404 on the lookup is "already undone", not a failure), None when it is still there.
        NotImplementedError when the action's undo cannot be checked."""
        model = self.validate(action, params)
        finder = getattr(self, f"find_undone_{action}", None)
        if finder is None:
            raise NotImplementedError(f"the undo of {self.platform}.{action} cannot be looked up")
        found: Result | None = finder(model, dict(result))
        return found

    @abstractmethod
    def check_auth(self) -> Result:
        """Prove the configured credentials work; raise AuthError when they do not."""

    def url(self, path: str) -> str:
        return f"{self.config.base_url}{path}"

    def _headers(self) -> dict[str, str]:
        """The credentials: a Bearer token by default (Slack, Notion, Google); platforms override."""
        return {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}

    def _call(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
        """One JSON request to the platform, relative to its base URL, with its credentials."""
        return self.http.json(method, self.url(path), platform=self.platform, json=body, params=params,
                              headers=self._headers())


def format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "params"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
