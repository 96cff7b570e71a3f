"""workers.broker_transport: what is a deliverable kombu message, what a quarantine record keeps, and the
kombu#582 guards every channel class of ours carries (plain Redis and Sentinel alike)."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from workers.broker_sentinel import SentinelChannel
from workers.broker_transport import (
    RAW_KEPT_BYTES,
    Channel,
    NotAMessage,
    OpsqChannelMixin,
    OwnedQoS,
    check_message,
    quarantine_record,
)
from workers.celery_app import QUARANTINING_TRANSPORT

BODY = base64.b64encode(json.dumps([[], {"echo": 1}, {}]).encode()).decode()
MESSAGE = {"body": BODY, "content-encoding": "utf-8", "content-type": "application/json",
           "headers": {"task": "opsq.execute_action", "id": "a" * 32},
           "properties": {"body_encoding": "base64", "delivery_tag": "t", "priority": 6,
                          "delivery_info": {"exchange": "", "routing_key": "noop"}}}


def test_a_kombu_message_passes_as_it_is():
    assert check_message(json.dumps(MESSAGE).encode()) == MESSAGE


@pytest.mark.parametrize(("raw", "why"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "a JSON list"),
    (b'"text"', "a JSON str"),
    (b"42", "a JSON int"),
    (json.dumps({"body": BODY}).encode(), "no body or properties"),
    (json.dumps({**MESSAGE, "body": "%%%"}).encode(), "not the base64 it claims"),
    (json.dumps({**MESSAGE, "body": None}).encode(), "not the base64 it claims"),
])
def test_what_cannot_be_delivered_says_why(raw, why):
    with pytest.raises(NotAMessage, match=why):
        check_message(raw)


def test_a_quarantine_record_keeps_the_first_bytes_and_the_size():
    raw = b"x" * (RAW_KEPT_BYTES + 10)
    record = quarantine_record("slack", raw, "not JSON")
    assert (record["queue"], record["reason"], record["bytes"], record["truncated"]) == ("slack", "not JSON",
                                                                                       len(raw), True)
    assert base64.b64decode(record["head"]) == raw[:RAW_KEPT_BYTES]


def test_the_quarantining_transport_is_importable_by_its_path():
    module, _, name = QUARANTINING_TRANSPORT.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name).Channel.__name__ == "Channel"


def _closed(cls: type[OpsqChannelMixin]) -> OpsqChannelMixin:
    """A channel as kombu leaves it once its connection died and Celery closed it: no connection."""
    channel = cls.__new__(cls)
    channel.connection = None
    return channel


@pytest.mark.parametrize("cls", [Channel, SentinelChannel])
def test_a_closed_channel_of_either_transport_has_the_kombu_582_guards(cls, caplog):
    channel = _closed(cls)
    # An ack after the close: a connection error Celery logs ("Couldn't ack"), not an AttributeError that
    # stops the worker.
    with pytest.raises(redis.ConnectionError, match="connection to Redis was lost"):
        channel._connparams()
    # The close's restore into the dead connection: swallowed, the messages left to the held-messages thread.
    qos = channel.QoS(channel)
    assert isinstance(qos, OwnedQoS)
    qos._delivered["tag-1"] = object()
    qos.restore_unacked()
    assert not qos._delivered and channel.opsq_gave_back is False
    assert "could not give back the messages this channel held (ConnectionError" in caplog.text
