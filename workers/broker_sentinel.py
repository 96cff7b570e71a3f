"""kombu's Redis Sentinel transport, with opsqueue's channel behaviour (workers.broker_transport).

Why this exists: with a `sentinel://` broker URL kombu uses its SentinelTransport, whose channel is not
ours: the quarantine (and whatever else OpsqChannelMixin carries) would be lost exactly on the highly
available setup. This channel is kombu's SentinelChannel (it asks the Sentinels for the master, and asks
again on reconnect, so a worker follows a failover) with the mixin in front of it.

Celery uses this transport through `broker_transport` (workers.celery_app) for `sentinel://` broker URLs.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis

from workers.broker_transport import OpsqChannelMixin


class SentinelChannel(OpsqChannelMixin, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
