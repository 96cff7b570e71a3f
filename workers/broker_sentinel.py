"""kombu's Redis Sentinel transport, with opsqueue's channel behaviour (workers.broker_transport).

Why this exists: with a `sentinel://` broker URL kombu uses its SentinelTransport, whose channel is not
ours: the quarantine (and whatever else OpsqChannelMixin carries) would be lost exactly on the highly
available setup. This channel is kombu's SentinelChannel (it asks the Sentinels for the master, and asks
again on reconnect, so a worker follows a failover) with the mixin in front of it.

Celery uses this transport through `broker_transport` (workers.celery_app) for `sentinel://` broker URLs,
with `stay_on_the_sentinels` as its `broker_failover_strategy`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis

from workers.broker_transport import OpsqChannelMixin


class SentinelChannel(OpsqChannelMixin, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def stay_on_the_sentinels(alternates: list[str]) -> Iterator[str]:
    """kombu's failover strategy for a `sentinel://` broker: never move to another URL of the list.

    kombu treats the `;`-separated entries as fail-over brokers: when a connection fails it switches to the
    next entry and re-parses it (kombu.Connection.switch). The entry's scheme then replaces the transport
    given to Celery (kombu's own SentinelTransport: no quarantine from then on), and its missing password
    replaces the master's (the next connection is refused: NOAUTH). There is nothing to switch to anyway:
    the Sentinel client asks every Sentinel of the list and finds the new master itself. So this yields the
    first entry's host without a scheme, which switch() takes as a host name only, keeping the transport,
    the password and the db of the connection as it was configured."""
    first = urlsplit(alternates[0]).hostname if alternates else None
    return itertools.repeat(first or "")
