"""Which exceptions are an outage of Redis or the database (the attempt waits and hands its message back),
and which are bugs (they fail the task as before)."""

from __future__ import annotations

import sqlite3

import kombu.exceptions
import pytest
import redis
from sqlalchemy import exc as sa_exc

from workers.outages import DATABASE, REDIS, outage_of


def _chained(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as e:
            raise outer from e
    except Exception as e:
        return e


@pytest.mark.parametrize("exc", [redis.ConnectionError("refused"), redis.TimeoutError("slow"),
                                 redis.BusyLoadingError("loading"), redis.ReadOnlyError("replica")])
def test_redis_unreachable_is_an_outage(exc):
    assert outage_of(exc) == REDIS


def test_a_publish_that_failed_because_redis_is_away_is_an_outage():
    assert outage_of(_chained(kombu.exceptions.OperationalError("publish"), redis.ConnectionError("x"))) == REDIS


def test_the_database_away_is_an_outage():
    err = sa_exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("unable to open database file"))
    assert outage_of(err) == DATABASE
    assert outage_of(sa_exc.InterfaceError("x", {}, Exception("closed"))) == DATABASE


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("x"), redis.ResponseError("WRONGTYPE"),
                                 sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key"))])
def test_bugs_and_refusals_are_not_outages(exc):
    assert outage_of(exc) is None
