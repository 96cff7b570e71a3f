"""workers.client.redis_cause: the cause an operator acts on, found through kombu's wrapping of redis-py's
errors (the out-of-memory case asks the server for its numbers: tests/faults/test_redis_memory.py)."""

from __future__ import annotations

import redis
from kombu.exceptions import OperationalError

from workers.client import redis_cause


def wrapped(inner: BaseException) -> OperationalError:
    """As kombu raises it from a publish: its OperationalError, caused by redis-py's error."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise OperationalError(str(exc)) from exc
    except OperationalError as outer:
        return outer


def test_credentials_refused_are_named_with_the_setting_to_check():
    for inner in (redis.exceptions.AuthenticationError("Authentication required."),
                  redis.exceptions.AuthenticationError("invalid username-password pair or user is disabled.")):
        cause = redis_cause(wrapped(inner))
        assert cause.startswith("Redis refused the credentials") and "OPSQ_REDIS_URL" in cause


def test_a_refused_connection_is_not_called_a_password_problem():
    refused = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    cause = redis_cause(wrapped(refused))
    assert cause.startswith("Redis refused the connection") and "127.0.0.1:1" in cause


def test_no_answer_and_other_errors():
    assert redis_cause(redis.exceptions.TimeoutError("Timeout reading from socket")).startswith(
        "Redis did not answer in time")
    assert redis_cause(redis.exceptions.ConnectionError("Connection reset by peer")).startswith("cannot reach Redis")
    assert redis_cause(ValueError("something else")).startswith("the broker refused the message")
