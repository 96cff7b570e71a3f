"""The JSON HTTP API over the client library (workers.client, workflows.client, workers.ops.dlq): every rule is
the library's; this module only authenticates, checks the caller's role and turns errors into 4xx bodies.

Every change is made with `actor="api:<token name>"`, so the audit trail names the token, never a name the
caller asserts. Endpoints are plain `def`: the library blocks (SQL, Redis), and FastAPI runs them in its thread
pool."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal

import redis
from fastapi import Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kombu.exceptions import OperationalError as KombuOperationalError
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from workers.api import failed_auths, slack
from workers.client import cancel_action, current_status, redis_cause, submit_action
from workers.errors import ConfigError, EnqueueError, NotAllowed, NotFound, OpsqError, SubmitError
from workers.ops import dlq
from workers.outages import DATABASE, PROBES, REDIS
from workers.settings import get_settings
from workers.status import ActionStatus
from workers.store import actions as store
from workers.store import api_tokens
from workers.store.api_tokens import Token
from workflows import client as workflows
from workflows import state
from workflows.spec import WorkflowInvalid
from workflows.status import ApprovalStatus


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: `error` is the message the CLI gives; `field`, the input it is about, when one is."""

    error: str
    field: str | None = None
    errors: list[str] | None = None


class ApiError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field, self.headers = status, error, field, headers


_ERR = {"model": ErrorBody}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _ERR, 401: _ERR, 403: _ERR, 404: _ERR, 409: _ERR, 422: _ERR, 429: _ERR, 503: _ERR}

def _surrogate_at(value: Any, path: str) -> str | None:
    """Where a lone surrogate (JSON's \\udxxx, not a character) sits in `value`: UTF-8 cannot encode it, so the
    store, Redis and YAML would each fail on it in their own way, later."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path
    elif isinstance(value, dict):
        for k, v in value.items():
            where = _surrogate_at(k, path) or _surrogate_at(v, f"{path}.{k}")
            if where:
                return where
    elif isinstance(value, list):
        for n, v in enumerate(value):
            where = _surrogate_at(v, f"{path}.{n}")
            if where:
                return where
    return None


class FieldError(ValueError):
    """A validator's refusal of one field inside the body (pydantic would report the whole body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _valid_unicode(self) -> _In:
        for name in type(self).model_fields:
            where = _surrogate_at(getattr(self, name), name)
            if where:
                raise FieldError(where, "not valid Unicode (a lone surrogate)")
        return self
# A year: what workers.scheduling accepts; bounded here too so a non-finite number never reaches it.
_SECONDS = Field(None, ge=0, le=366 * 86400, allow_inf_nan=False)


class ActionIn(_In):
    platform: str = Field(max_length=64)
    action: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    priority: str = Field("normal", max_length=16)
    idempotency_key: str | None = None
    dedupe: bool = False
    max_attempts: int | None = None
    fail_fast: bool = False
    countdown: float | None = _SECONDS
    eta: datetime | None = None
    expires_in: float | None = _SECONDS


class Submitted(BaseModel):
    id: str
    deduplicated: bool
    status: str


class ActionPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


class WorkflowIn(_In):
    spec: dict[str, Any] | str = Field(description="The workflow: a JSON object, or its YAML/JSON text.")
    input: dict[str, Any] = Field(default_factory=dict)
    priority: str | None = Field(None, max_length=16)
    idempotency_key: str | None = None
    countdown: float | None = _SECONDS
    eta: datetime | None = None
    expires_in: float | None = _SECONDS


class CancelIn(_In):
    why: str | None = Field(None, max_length=500)
    rollback: bool = True


class DecisionIn(_In):
    comment: str | None = Field(None, max_length=2000)


class ReplayIn(_In):
    params: dict[str, Any] | None = None


class Done(BaseModel):
    id: str
    result: str


class Health(BaseModel):
    #: ok: both answer; degraded: Redis does not (reads answer from the database, submits and decisions are 503);
    #: down: the database does not (every authenticated request is a 503).
    status: Literal["ok", "degraded", "down"]
    version: str
    redis: Literal["ok", "down"]
    database: Literal["ok", "down"]


def _answers(which: str) -> bool:
    try:
        return PROBES[which]()
    except Exception:  # any failure to answer is "down"; its text is not for an anonymous caller
        return False


def _version() -> str:
    try:
        return version("opsqueue")
    except PackageNotFoundError:  # run from a checkout
        return "unknown"


# ---- authentication ------------------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="An API token: `opsq api token create NAME --role ROLE`.")


def caller(request: Request,
           credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> Token:
    who = failed_auths.client_key(request.client.host) if request.client else "?"
    wait = failed_auths.retry_after(who)
    if wait is not None:
        raise ApiError(429, f"too many failed authentications from {who}: try again in {wait}s",
                       headers={"Retry-After": str(wait)})
    token = api_tokens.authenticate(credentials.credentials) if credentials is not None else None
    if token is None:
        failed_auths.failed(who)
        raise ApiError(401, "a valid API token is required (Authorization: Bearer <token>); it is missing, "
                            "unknown or revoked")
    return token


Caller = Annotated[Token, Depends(caller)]


def need(token: Token, permission: str) -> None:
    if not token.may(permission):
        raise ApiError(403, f"token {token.name!r} (role {token.role}) may not {permission}")


def _reads_action(token: Token, action_id: str) -> None:
    if token.may("read"):
        return
    if token.may("submit") and api_tokens.action_owner(action_id) == token.name:
        return
    # Not "forbidden": whether someone else's action exists is none of this token's business.
    raise NotFound(f"no action with id {action_id}")


def _reads_workflow(token: Token, workflow_id: str) -> None:
    if token.may("read"):
        return
    if token.may("submit") and state.get_run_row(workflow_id)["created_by"] == token.actor:
        return
    raise NotFound(f"no workflow with id {workflow_id}")


# ---- errors --------------------------------------------------------------------------------------------------

def _field_of(message: str, fields: tuple[str, ...]) -> str | None:
    """The input a library message is about: the library's messages name it (`unknown priority ...`,
    `countdown must be ...`), so the first field named in the message, else `params` for an action."""
    lowered = message.lower()
    for name in fields:
        if lowered.startswith(name) or f" {name}" in lowered or name.replace("_", " ") in lowered:
            return name
    return None


def _error(status: int, error: str, field: str | None = None, errors: list[str] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error, field=field, errors=errors).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _handlers(app: FastAPI) -> None:
    def handle(kind: type[Exception]) -> Callable[[Callable[[Request, Any], JSONResponse]],
                                                  Callable[[Request, Any], JSONResponse]]:
        def deco(fn: Callable[[Request, Any], JSONResponse]) -> Callable[[Request, Any], JSONResponse]:
            app.add_exception_handler(kind, fn)
            return fn
        return deco

    @handle(ApiError)
    def api_error(_r: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return _error(exc.status, exc.error, exc.field, headers=headers)

    @handle(RequestValidationError)
    def invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        messages = []
        field = None
        for err in exc.errors():
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, FieldError):
                field = field or cause.field
                messages.append(str(cause))
                continue
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            where = ".".join(loc) or "body"
            field = field or where
            messages.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, messages[0] if messages else "invalid request", field, errors=messages)

    @handle(WorkflowInvalid)
    def workflow_invalid(_r: Request, exc: WorkflowInvalid) -> JSONResponse:
        return _error(422, "the workflow is invalid: " + "; ".join(exc.errors), "spec", errors=list(exc.errors))

    @handle(SubmitError)
    def submit_error(_r: Request, exc: SubmitError) -> JSONResponse:
        field = _field_of(str(exc), ("priority", "idempotency_key", "countdown", "eta", "expires_in",
                                     "max_attempts", "input", "comment", "name", "role")) or "params"
        return _error(422, str(exc), field)

    for kind, (status, message) in PLAIN_ERRORS.items():
        app.add_exception_handler(kind, _plain(status, message))


def _database_cause(exc: SQLAlchemyError) -> str:
    return f"database error: {str(getattr(exc, 'orig', exc)).splitlines()[0]}"


#: The errors answered with a status and a message alone. Starlette picks the handler of the nearest class in the
#: exception's MRO, so a subclass listed here (NotFound) wins over its base (OpsqError).
PLAIN_ERRORS: dict[type[Exception], tuple[int, Callable[[Any], str]]] = {
    NotFound: (404, str),
    NotAllowed: (403, str),
    # The library refuses a change the state does not allow (already approved, not running...).
    OpsqError: (409, str),
    # What the API depends on is missing or down: the caller may try again later; nothing was half done.
    ConfigError: (503, str),
    EnqueueError: (503, str),
    redis.RedisError: (503, redis_cause),
    KombuOperationalError: (503, redis_cause),
    SQLAlchemyError: (503, _database_cause),
}


def _plain(status: int, message: Callable[[Any], str]) -> Callable[[Request, Exception], JSONResponse]:
    def handler(_r: Request, exc: Exception) -> JSONResponse:
        return _error(status, message(exc))
    return handler


# ---- the app -------------------------------------------------------------------------------------------------

def approved_text(approval_id: str, workflow_id: str) -> str:
    status, count, required = workflows.approval_progress(approval_id)
    if status == ApprovalStatus.PENDING:
        return f"approval recorded ({count} of {required} distinct approvers): workflow {workflow_id} still waits"
    return f"approved: workflow {workflow_id} resumes"


def _key(body_key: str | None, header_key: str | None) -> str | None:
    if body_key is not None and header_key is not None and body_key != header_key:
        raise ApiError(422, "the Idempotency-Key header and idempotency_key differ: give one", "idempotency_key")
    return body_key if body_key is not None else header_key


def _cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    at, _, last_id = cursor.partition("~")
    try:
        when = _utc(datetime.fromisoformat(at), "cursor")
    except ValueError:
        when = None
    if when is None or not last_id:
        raise ApiError(422, "cursor: not a cursor this API gave (use next_cursor as it came)", "cursor")
    return when, last_id


def _utc(when: datetime, field: str) -> datetime:
    """In UTC (what the store holds); one without a zone is taken as UTC."""
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:
        raise ApiError(422, f"{field}: {when.isoformat()} is out of range", field) from None


IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


def create_app() -> FastAPI:
    app = FastAPI(title="opsqueue", version=_version(), responses=ERROR_RESPONSES,
                  description="Actions, workflows and approvals over HTTP (docs/API.md).")
    _handlers(app)

    @app.get("/v1/health", response_model=Health, responses={503: {"model": Health}}, tags=["health"])
    def health() -> JSONResponse:
        """Unauthenticated: whether the API and what it depends on answer (no address, no error text: nothing an
        anonymous caller should learn). 503 when the database is down, so a readiness probe takes the process out
        of a load balancer while it can answer nothing but this; Redis down is `degraded`, still 200: reads
        answer from the database."""
        up = {which: _answers(which) for which in (REDIS, DATABASE)}
        status: Literal["ok", "degraded", "down"] = "down" if not up[DATABASE] else "ok" if up[REDIS] else "degraded"
        body = Health(status=status, version=_version(), redis="ok" if up[REDIS] else "down",
                      database="ok" if up[DATABASE] else "down")
        return JSONResponse(body.model_dump(), status_code=503 if status == "down" else 200)

    # -- actions

    @app.post("/v1/actions", status_code=202, response_model=Submitted, tags=["actions"])
    def post_action(body: ActionIn, token: Caller, idempotency_key: IdempotencyHeader = None) -> Submitted:
        """Validate and enqueue one action (or schedule it: countdown/eta). Retrying with the same idempotency key
        returns the first action (`deduplicated`) and enqueues nothing."""
        need(token, "submit")
        handle = submit_action(body.platform, body.action, body.params, priority=body.priority,
                               idempotency_key=_key(body.idempotency_key, idempotency_key), dedupe=body.dedupe,
                               max_attempts=body.max_attempts, fail_fast=body.fail_fast, actor=token.actor,
                               countdown=body.countdown, eta=body.eta, expires_in=body.expires_in)
        if not handle.deduplicated:
            api_tokens.own_action(handle.id, token.name)
        else:
            _reads_action(token, handle.id)  # another token's key: do not leak its action
        return Submitted(id=handle.id, deduplicated=handle.deduplicated, status=current_status(handle.id).status)

    @app.get("/v1/actions/{action_id}", response_model=dict[str, Any], tags=["actions"])
    def get_action(action_id: str, token: Caller) -> dict[str, Any]:
        _reads_action(token, action_id)
        return current_status(action_id).to_dict()

    @app.post("/v1/actions/{action_id}/cancel", response_model=dict[str, Any], tags=["actions"])
    def post_cancel(action_id: str, token: Caller, body: CancelIn | None = None) -> dict[str, Any]:
        need(token, "operate")
        return cancel_action(action_id, actor=token.actor, why=body.why if body else None).to_dict()

    @app.get("/v1/actions", response_model=ActionPage, tags=["actions"])
    def list_actions(token: Caller,
                     status: Annotated[ActionStatus | None, Query()] = None,
                     platform: Annotated[str | None, Query(max_length=64)] = None,
                     since: Annotated[datetime | None, Query(description="ISO 8601; without a zone: UTC")] = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
                     cursor: Annotated[str | None, Query(max_length=100)] = None) -> ActionPage:
        """The newest first, a page at a time: pass `next_cursor` back as `cursor` for the next page."""
        if not (token.may("read") or token.may("submit")):
            need(token, "read")
        limit = min(limit, get_settings().api_page_max)
        among = None if token.may("read") else api_tokens.owned_actions_query(token.name)
        if since is not None:
            since = _utc(since, "since")
        views = store.list_recent(limit=limit, status=status, platform=platform, since=since,
                                  before=_cursor(cursor), among=among)
        last = views[-1] if len(views) == limit else None
        return ActionPage(items=[v.to_dict() for v in views],
                          next_cursor=f"{last.created_at.isoformat()}~{last.id}" if last else None)

    @app.post("/v1/dead-letters/{dead_letter_id}/replay", status_code=202, response_model=Submitted,
              tags=["actions"])
    def post_replay(dead_letter_id: int, token: Caller, body: ReplayIn | None = None) -> Submitted:
        """Enqueue a dead-lettered action again, as a new action (`opsq dlq replay`)."""
        need(token, "operate")
        handle = dlq.replay(dead_letter_id, body.params if body else None, actor=token.actor)
        return Submitted(id=handle.id, deduplicated=handle.deduplicated, status=current_status(handle.id).status)

    # -- workflows

    @app.post("/v1/workflows", status_code=202, response_model=Submitted, tags=["workflows"])
    def post_workflow(body: WorkflowIn, token: Caller, idempotency_key: IdempotencyHeader = None) -> Submitted:
        """Validate the whole spec (every error at once, nothing stored if any) and start it."""
        need(token, "submit")
        # Text only, never a path: the spec's loader reads a one-line string as a file name. Checked whole there
        # (workflows.spec.check): every problem, each with its line, in the 422's `errors`.
        spec = body.spec if not isinstance(body.spec, str) or "\n" in body.spec else body.spec + "\n"
        handle = workflows.submit_workflow(spec, body.input, priority=body.priority,
                                           idempotency_key=_key(body.idempotency_key, idempotency_key),
                                           created_by=token.actor, expires_in=body.expires_in,
                                           countdown=body.countdown, eta=body.eta)
        if handle.deduplicated:
            _reads_workflow(token, handle.id)
        return Submitted(id=handle.id, deduplicated=handle.deduplicated, status=state.run_status(handle.id))

    @app.get("/v1/workflows/{workflow_id}", response_model=dict[str, Any], tags=["workflows"])
    def get_workflow(workflow_id: str, token: Caller) -> dict[str, Any]:
        """The whole record: status, spec, input, steps with their outputs, compensations, approvals, timeline."""
        _reads_workflow(token, workflow_id)
        return state.whole(workflow_id)

    @app.post("/v1/workflows/{workflow_id}/rollback", response_model=Done, tags=["workflows"])
    def post_rollback(workflow_id: str, token: Caller) -> Done:
        need(token, "operate")
        return Done(id=workflow_id, result=workflows.rollback(workflow_id, token.actor))

    @app.post("/v1/workflows/{workflow_id}/resume", response_model=Done, tags=["workflows"])
    def post_resume(workflow_id: str, token: Caller) -> Done:
        need(token, "operate")
        return Done(id=workflow_id, result=workflows.resume(workflow_id, token.actor))

    @app.post("/v1/workflows/{workflow_id}/cancel", response_model=Done, tags=["workflows"])
    def post_workflow_cancel(workflow_id: str, token: Caller, body: CancelIn | None = None) -> Done:
        need(token, "operate")
        body = body or CancelIn()
        return Done(id=workflow_id, result=workflows.cancel_workflow(workflow_id, actor=token.actor,
                                                                     rollback=body.rollback, why=body.why))

    # -- approvals

    @app.get("/v1/approvals", response_model=list[dict[str, Any]], tags=["approvals"])
    def list_approvals(token: Caller, all: Annotated[bool, Query(description="Also decided and expired ones")]
                       = False) -> list[dict[str, Any]]:
        need(token, "read")
        return state.approvals(status=None if all else ApprovalStatus.PENDING)

    @app.post("/v1/approvals/{approval_id}/approve", response_model=Done, tags=["approvals"])
    def post_approve(approval_id: str, token: Caller, body: DecisionIn | None = None) -> Done:
        need(token, "approve")
        handle = workflows.approve(approval_id, token.actor, body.comment if body else None)
        return Done(id=approval_id, result=approved_text(approval_id, handle.id))

    @app.post("/v1/approvals/{approval_id}/deny", response_model=Done, tags=["approvals"])
    def post_deny(approval_id: str, token: Caller, body: DecisionIn | None = None) -> Done:
        need(token, "approve")
        reason = (body.comment if body else None) or ""
        if not reason.strip():
            raise ApiError(422, "comment: a reason is required to deny (it is recorded)", "comment")
        handle = workflows.deny(approval_id, reason, token.actor)
        return Done(id=approval_id, result=f"denied: workflow {handle.id} rolls back")

    # -- Slack

    @app.post("/slack/interactions", response_model=Done, tags=["slack"])
    async def slack_interactions(request: Request) -> Done:
        """Slack's interactivity requests (an Approve or Deny click): authenticated by Slack's signature, not a
        token (docs/WORKFLOWS.md, "Approvals from Slack")."""
        raw = await request.body()
        try:
            answer = await run_in_threadpool(slack.handle, raw, request.headers.get("X-Slack-Request-Timestamp"),
                                             request.headers.get("X-Slack-Signature"))
        except slack.Refused as exc:
            raise ApiError(exc.status, exc.error) from None
        return Done(**answer)

    return app
