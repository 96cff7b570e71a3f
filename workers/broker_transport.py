"""kombu's Redis transport, with a quarantine for messages that are not messages.

Why this exists: kombu's Redis channel pops a queue's item with BRPOP and JSON-decodes it on the spot; an item
that is not a kombu message (not JSON, a JSON list or string, a body that is not the base64 it claims) raises
out of the consumer and Celery stops the whole worker ("Unrecoverable error"). One bad LPUSH on a queue then
takes a worker down, and it dies again on the next one after every restart. Here such an item goes to the
quarantine list (`opsq:quarantine`: the reason, the queue, its size and its first bytes) instead, is counted,
and the worker goes on. The item is never logged whole.

Celery uses this transport through `broker_transport` (workers.celery_app) for `redis://` broker URLs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps

from workers import held_messages
from workers.settings import get_settings

log = logging.getLogger("opsq.worker")

QUARANTINE_KEY = "opsq:quarantine"
QUARANTINED_COUNT_KEY = "opsq:quarantine:count"
QUARANTINE_MAX = 10_000  # newest kept; the counter keeps the total
RAW_KEPT_BYTES = 4096


class NotAMessage(ValueError):
    pass


def check_message(raw: bytes | str) -> dict[str, Any]:
    """The payload kombu would deliver, or NotAMessage saying why it cannot be delivered."""
    try:
        payload = json.loads(bytes_to_str(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAMessage(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise NotAMessage(f"a JSON {type(payload).__name__}, not a message object")
    properties = payload.get("properties")
    if not isinstance(properties, dict) or "body" not in payload:
        raise NotAMessage("no body or properties: not a kombu message")
    if properties.get("body_encoding") == "base64":
        body = payload["body"]
        try:
            base64.b64decode(body if isinstance(body, str | bytes) else b"\x00", validate=True)
        except (binascii.Error, ValueError):
            raise NotAMessage("a body that is not the base64 it claims") from None
    return payload


def quarantine_record(queue: str, raw: bytes | str, reason: str) -> dict[str, Any]:
    data = raw.encode() if isinstance(raw, str) else raw
    return {"at": time.time(), "queue": queue, "reason": reason, "bytes": len(data),
            "head": base64.b64encode(data[:RAW_KEPT_BYTES]).decode(), "truncated": len(data) > RAW_KEPT_BYTES}


class OwnedQoS(kombu_redis.QoS):
    """kombu's ack emulation, with each delivery also recorded under its consumer (workers.held_messages)."""

    def append(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        with self.pipe_or_acquire() as pipe:
            # kombu's two writes and ours, one MULTI: a message is held by an owner exactly when it is unacked.
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag,
                      dumps([message._raw, delivery["exchange"], delivery["routing_key"]]))
            if self.channel.opsq_owner:
                pipe.sadd(held_messages.held_key(self.channel.opsq_owner), delivery_tag)
                pipe.sadd(held_messages.CONSUMERS_KEY, self.channel.opsq_owner)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        if self.channel.opsq_owner:
            pipe = pipe.srem(held_messages.held_key(self.channel.opsq_owner), delivery_tag)
        return pipe

    def restore_unacked(self, client: Any = None) -> None:
        # At close kombu puts back what this channel held. When the channel closes because the connection
        # died, that write goes to a connection that is gone and raised out of Celery's consumer, ending
        # the worker (kombu#582: AttributeError from _connparams, or a ConnectionError). The messages are
        # still in Redis under this channel's owner: the held-messages thread gives them back once Redis
        # answers again, so the worker goes on. (The ack of a task that finishes after the close goes
        # through OpsqChannelMixin._connparams.)
        try:
            super().restore_unacked(client)
            self.channel.opsq_gave_back = True
        except Exception as exc:
            self._delivered.clear()
            log.warning("could not give back the messages this channel held (%s: %s); they are given back "
                        "when Redis is reachable again", type(exc).__name__, exc)


if TYPE_CHECKING:
    _ChannelBase = kombu_redis.Channel
else:
    _ChannelBase = object


class OpsqChannelMixin(_ChannelBase):
    """Everything opsqueue adds to a kombu Redis channel; mixed into each channel class we use (plain Redis
    here, Sentinel in workers.broker_sentinel), so every broker URL scheme behaves the same."""

    QoS = OwnedQoS
    opsq_owner: str = ""
    opsq_gave_back: bool = False

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        if not self.opsq_owner:
            owner = held_messages.new_owner()
            if owner is not None:  # a worker's channel (held_messages.set_node ran)
                self.opsq_owner = owner
                held_messages.registry().register(self, get_settings().consumer_ttl_s)
        return super().basic_consume(queue, *args, **kwargs)

    def close(self) -> None:
        owner, closed = self.opsq_owner, self.closed
        qos = self.__dict__.get("_qos")
        held_nothing = qos is None or not qos._delivered
        super().close()
        if owner and not closed:
            gave_back = held_nothing or self.opsq_gave_back
            held_messages.registry().unregister(owner, gave_back=gave_back)
            if gave_back:  # a clean goodbye: nothing left to reap, so leave no trace in `opsq workers list`
                with contextlib.suppress(Exception):  # else the others reap it once its heartbeat runs out
                    held_messages.retire(self._create_client(), owner)

    def _connparams(self, asynchronous: bool = False) -> Any:
        # A channel closed because its connection was lost has no connection left. A task that finishes
        # after that acks its message on this channel, which needs a new pool, which reads the connection's
        # parameters: AttributeError ('NoneType' object has no attribute 'client', kombu#582), which Celery
        # does not expect from an ack and so stops the whole worker ("Unrecoverable error"; 1 Sentinel drill
        # run in ~15). As a connection error it is what it is: Celery logs "Couldn't ack" and goes on, and
        # the message, still unacknowledged in Redis, is given back and answered by the guards' record.
        if self.connection is None:
            raise redis.ConnectionError("the channel is closed: its connection to Redis was lost")
        return super()._connparams(asynchronous)

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's own, but for the check: the popped item is checked before it is delivered.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next iteration reconnects
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            try:
                payload = check_message(item)
            except NotAMessage as exc:
                self._quarantine(dest, item, str(exc))
                return True
            self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = False  # kombu writes None here; its readers only ask whether it is set
            flush = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.6
            if flush is not None:
                flush()

    def _quarantine(self, queue: str, raw: bytes, reason: str) -> None:
        record = quarantine_record(queue, raw, reason)
        with self.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.lpush(QUARANTINE_KEY, json.dumps(record))
            pipe.ltrim(QUARANTINE_KEY, 0, QUARANTINE_MAX - 1)
            pipe.incr(QUARANTINED_COUNT_KEY)
            pipe.execute()
        log.error("quarantined a message from queue %s that cannot be delivered: %s (%d bytes; "
                  "opsq queue quarantine list)", queue, reason, record["bytes"])


class Channel(OpsqChannelMixin, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel
