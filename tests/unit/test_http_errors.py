"""The shared HTTP layer's mapping of responses to typed errors, and Retry-After parsing."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from executors.errors import (
    AuthError,
    ExecutorError,
    InvalidParams,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from executors.http import parse_retry_after, raise_for_status, sent_before_failing

URL = "https://api.example.com/v1/things?token=s3cr3t-query-token"


def response(status: int, *, json: object = None, text: str | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", URL)
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=json, headers=headers, request=request)


def raised(resp: httpx.Response) -> ExecutorError:
    with pytest.raises(ExecutorError) as info:
        raise_for_status(resp, "demo")
    return info.value


class TestParseRetryAfter:
    @pytest.mark.parametrize(("value", "expected"), [("2", 2.0), ("0", 0.0), (" 120 ", 120.0), ("1.5", 1.5),
                                                     ("-3", 0.0)])
    def test_delta_seconds(self, value: str, expected: float) -> None:
        assert parse_retry_after(value) == expected

    def test_http_date_in_the_future_is_seconds_from_now(self) -> None:
        when = email.utils.formatdate(time.time() + 30, usegmt=True)
        parsed = parse_retry_after(when)
        assert parsed is not None
        assert 27 <= parsed <= 30.5

    def test_http_date_in_the_past_is_zero(self) -> None:
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0

    @pytest.mark.parametrize("value", [None, "", "   ", "soon", "tomorrow at noon", "12abc"])
    def test_missing_or_garbage_is_none(self, value: str | None) -> None:
        assert parse_retry_after(value) is None


class TestRaiseForStatus:
    @pytest.mark.parametrize("status", [200, 201, 204, 302, 304])
    def test_success_and_redirects_pass(self, status: int) -> None:
        raise_for_status(response(status), "demo")

    def test_429_is_rate_limited_with_retry_after(self) -> None:
        err = raised(response(429, json={"message": "slow down"}, headers={"Retry-After": "7"}))
        assert type(err) is RateLimitedError
        assert err.retry_after == 7.0
        assert err.health_failure is False
        assert err.status == 429 and err.platform == "demo"
        assert err.to_dict() == {"kind": "rate_limited", "message": err.message, "status": 429,
                                 "retry_after": 7.0, "ambiguous": False}

    def test_429_without_retry_after(self) -> None:
        err = raised(response(429))
        assert isinstance(err, RateLimitedError)
        assert err.retry_after is None

    @pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded"])
    def test_googles_403_rate_limit_is_rate_limited_not_auth(self, reason: str) -> None:
        body = {"error": {"code": 403, "message": "Rate Limit Exceeded", "status": "PERMISSION_DENIED",
                          "errors": [{"domain": "usageLimits", "reason": reason, "message": "Rate Limit Exceeded"}]}}
        err = raised(response(403, json=body))
        assert type(err) is RateLimitedError and err.retry_after is None and not err.health_failure

    def test_googles_403_permission_refused_stays_auth(self) -> None:
        body = {"error": {"code": 403, "errors": [{"reason": "insufficientPermissions"}]}}
        assert type(raised(response(403, json=body))) is AuthError
        assert type(raised(response(403, text="<html>forbidden</html>"))) is AuthError

    @pytest.mark.parametrize("status", [401, 403])
    def test_401_403_are_auth_errors(self, status: int) -> None:
        err = raised(response(status, json={"message": "bad token"}))
        assert type(err) is AuthError
        assert err.kind == "auth"
        assert err.health_failure is False

    @pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
    def test_5xx_and_408_are_retryable_health_failures(self, status: int) -> None:
        err = raised(response(status))
        assert type(err) is RetryableError
        assert err.health_failure is True
        assert err.status == status

    def test_503_keeps_its_retry_after(self) -> None:
        err = raised(response(503, headers={"Retry-After": "4"}))
        assert isinstance(err, RetryableError)
        assert err.retry_after == 4.0

    @pytest.mark.parametrize("status", [400, 404, 405, 409, 410, 422])
    def test_other_4xx_are_permanent(self, status: int) -> None:
        err = raised(response(status))
        assert type(err) is PermanentError
        assert not isinstance(err, InvalidParams)
        assert err.health_failure is False

    @pytest.mark.parametrize(("kwargs", "expected"), [
        ({"json": {"message": "no such list"}}, "no such list"),
        ({"json": {"error": "channel_not_found"}}, "channel_not_found"),
        ({"json": {"error": {"code": 404, "message": "File not found: x."}}}, "File not found: x."),
        ({"json": {"detail": "gone"}}, "gone"),
        ({"text": "invalid id"}, "invalid id"),
        ({"text": ""}, "Not Found"),
    ])
    def test_message_names_platform_method_path_status_and_reason(self, kwargs: dict[str, object],
                                                                  expected: str) -> None:
        err = raised(response(404, **kwargs))  # type: ignore[arg-type]
        assert str(err).startswith("demo POST /v1/things -> HTTP 404: ")
        assert expected in str(err)

    def test_query_string_never_reaches_the_message(self) -> None:
        err = raised(response(500, json={"message": "boom"}))
        assert "s3cr3t" not in str(err)
        assert "s3cr3t" not in str(err.to_dict())

    def test_long_bodies_are_cut(self) -> None:
        err = raised(response(400, text="x" * 5000))
        assert len(str(err)) < 300


class TestAmbiguity:
    """Which failures may have acted on the platform (its answer lost): the next attempt looks the effect up."""

    @pytest.mark.parametrize(("exc", "ambiguous"), [
        (httpx.ReadTimeout("read"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
        (httpx.ReadError("connection reset"), True),
        (httpx.ConnectTimeout("connect"), False),
        (httpx.ConnectError("refused"), False),
        (httpx.PoolTimeout("pool"), False),
        (httpx.WriteError("broken pipe"), False),
    ])
    def test_a_transport_failure_is_ambiguous_only_after_the_request_was_sent(self, exc, ambiguous):
        assert sent_before_failing(exc) is ambiguous

    @pytest.mark.parametrize(("status", "ambiguous"), [(502, True), (504, True), (500, False), (503, False)])
    def test_a_gateway_error_is_ambiguous(self, status, ambiguous):
        with pytest.raises(RetryableError) as caught:
            raise_for_status(httpx.Response(status, request=httpx.Request("POST", "https://x.test/a")), "webhook")
        assert caught.value.ambiguous is ambiguous
