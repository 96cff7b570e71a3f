"""workers.dev.broker_url and the Redis settings: one server or Sentinel, the passwords kept out of sight, and
what the broker, the result backend and the guards' client are each given (workers.celery_app)."""

from __future__ import annotations

import importlib
import ssl

import pytest
import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.utils.url import _parse_url
from pydantic import SecretStr

from workers.broker_sentinel import SentinelChannel, SentinelTransport, stay_on_the_sentinels
from workers.broker_transport import OpsqChannelMixin
from workers.celery_app import (
    QUARANTINING_SENTINEL_TRANSPORT,
    QUARANTINING_TRANSPORT,
    broker_transport,
    celery_config,
)
from workers.dev.broker_url import parse_redis_url, redact_redis_url, redis_target
from workers.errors import ConfigError
from workers.ops.health import mask
from workers.settings import Settings

SENTINELS = "sentinel://10.0.0.1:26379/3;sentinel://10.0.0.2:26380/3;sentinel://10.0.0.3"


def test_a_single_server_url_is_used_as_it_is():
    t = parse_redis_url("redis://cache:6380/2")
    assert (t.scheme, t.db, t.sentinels, t.is_sentinel, t.url) == ("redis", 2, (), False, "redis://cache:6380/2")
    assert parse_redis_url("rediss://:pw@cache:6380/0").password == "pw"
    assert parse_redis_url("unix:///run/redis.sock?db=1").scheme == "unix"


def test_a_sentinel_url_lists_every_sentinel_with_the_default_port():
    t = parse_redis_url(SENTINELS, master="mymaster")
    assert t.is_sentinel and t.master == "mymaster" and t.db == 3
    assert t.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert t.password is None and t.url == SENTINELS


@pytest.mark.parametrize(("url", "master", "says"), [
    (SENTINELS, None, "set OPSQ_REDIS_SENTINEL_MASTER"),
    ("sentinel://a:26379;redis://b:6379", "m", "entry 2 is not a sentinel:// URL"),
    ("sentinel://a:26379;sentinel://:other@b:26379", "m", "entry 2 sets its own user, password or db"),
    ("sentinel://a:26379/1;sentinel://b:26379/2", "m", "entry 2 sets its own user, password or db"),
    ("sentinel://a:port", "m", "not a number"),
    ("sentinel:///0", "m", "has no host"),
    ("redis://a:6379;redis://b:6379", None, "need sentinel:// URLs"),
    ("http://a:6379", None, "scheme http:// is not one of"),
    ("redis://a:6379/zero", None, "must be a number"),
])
def test_what_is_wrong_with_a_url_is_said(url, master, says):
    with pytest.raises(ConfigError, match=says):
        parse_redis_url(url, master=master)


def test_the_password_setting_goes_into_the_first_entry_quoted():
    t = parse_redis_url(SENTINELS, master="m", password="p@ss:w/rd", sentinel_password="sp")
    first = t.url.split(";")[0]
    assert first == "sentinel://:p%40ss%3Aw%2Frd@10.0.0.1:26379/3"
    assert _parse_url(first).password == "p@ss:w/rd"  # what kombu and Celery read back
    assert t.password == "p@ss:w/rd" and t.sentinel_password == "sp"
    assert t.url.split(";")[1:] == SENTINELS.split(";")[1:]
    assert parse_redis_url("redis://u@h:1/0", password="x").url == "redis://u:x@h:1/0"
    with pytest.raises(ConfigError, match="set twice") as exc:
        parse_redis_url("redis://:secret-in-url@h/0", password="secret-setting")
    assert "secret" not in str(exc.value).replace("secret-", "")  # the message names no password


def test_passwords_never_show():
    t = parse_redis_url("sentinel://user:pw1@a:1/0;sentinel://b:2/0", master="m", sentinel_password="spw")
    assert "pw1" not in repr(t) and "spw" not in repr(t)
    assert t.display == "sentinel://user:**@a:1/0;sentinel://b:2/0"
    assert redact_redis_url("redis://:p@h:6379/0") == "redis://:**@h:6379/0"
    assert redact_redis_url("redis://h:6379/0") == "redis://h:6379/0"
    # validate-env's view of OPSQ_REDIS_URL: make_url cannot parse a sentinel list, every password still goes
    assert mask("sentinel://:p1@a:1;sentinel://:p1@b:2") == "sentinel://:**@a:1;sentinel://:**@b:2"
    assert mask(SecretStr("sentinel-password")) != "sentinel-password"


def test_a_sentinel_url_without_its_master_is_refused_when_the_settings_load(monkeypatch):
    monkeypatch.setenv("OPSQ_REDIS_URL", SENTINELS)
    with pytest.raises(ValueError, match="OPSQ_REDIS_SENTINEL_MASTER"):
        Settings()
    monkeypatch.setenv("OPSQ_REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("OPSQ_REDIS_SENTINEL_PASSWORD", "sentinel-secret")
    monkeypatch.setenv("OPSQ_REDIS_PASSWORD", "master-secret")
    s = Settings()
    assert "sentinel-secret" not in repr(s) and "master-secret" not in repr(s)
    t = redis_target(s)
    assert (t.master, t.password, t.sentinel_password) == ("mymaster", "master-secret", "sentinel-secret")


def test_a_refused_setting_prints_no_secret(monkeypatch):
    """pydantic would print the tail of every setting read with the error: here a password in the URL."""
    monkeypatch.setenv("OPSQ_REDIS_URL", "sentinel://h1:26379;sentinel://:master-secret-in-url@h2:26379")
    monkeypatch.setenv("OPSQ_SLACK_TOKEN", "xoxb-slack-secret-token")
    with pytest.raises(ValueError) as exc:
        Settings()
    assert "OPSQ_REDIS_SENTINEL_MASTER" in str(exc.value)
    assert "secret" not in str(exc.value)


def test_the_broker_the_backend_and_the_guards_get_the_same_sentinels(monkeypatch):
    monkeypatch.setenv("OPSQ_REDIS_URL", SENTINELS)
    monkeypatch.setenv("OPSQ_REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("OPSQ_REDIS_SENTINEL_PASSWORD", "sentinel-secret")
    conf = celery_config(Settings())
    assert conf["broker_url"] == conf["result_backend"] == SENTINELS
    assert conf["broker_transport"] == QUARANTINING_SENTINEL_TRANSPORT
    for options in (conf["broker_transport_options"], conf["result_backend_transport_options"]):
        assert options["master_name"] == "mymaster"
        assert options["sentinel_kwargs"]["password"] == "sentinel-secret"
        assert options["sentinel_kwargs"]["socket_timeout"] > 0  # a dead Sentinel must not hang a client
    assert conf["broker_transport_options"]["visibility_timeout"] == 3600  # ours are kept beside them


def test_a_rediss_url_gives_every_client_the_same_tls_options(monkeypatch):
    t = parse_redis_url("rediss://:pw@cache:6380/1?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem")
    assert t.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem", "ssl_certfile": "/c.pem",
                     "ssl_keyfile": "/k.pem"}  # the certificate is checked unless the URL says otherwise
    assert parse_redis_url("rediss://h/0?ssl_cert_reqs=none").ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert parse_redis_url("rediss://h/0?ssl_cert_reqs=CERT_OPTIONAL").ssl == {"ssl_cert_reqs": ssl.CERT_OPTIONAL}
    with pytest.raises(ConfigError, match="ssl_cert_reqs must be one of"):
        parse_redis_url("rediss://h/0?ssl_cert_reqs=maybe")
    assert parse_redis_url("redis://h/0").ssl is None
    # ... and taken out of the URL, which kombu would let replace them whole
    assert parse_redis_url("rediss://h/0?ssl_cert_reqs=none&health_check_interval=5").url == \
        "rediss://h/0?health_check_interval=5"
    monkeypatch.setenv("OPSQ_REDIS_URL", "rediss://cache:6380/0?ssl_ca_certs=/etc/ca.pem")
    conf = celery_config(Settings())
    assert conf["broker_transport"] == QUARANTINING_TRANSPORT
    assert conf["broker_use_ssl"] == conf["redis_backend_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                                                         "ssl_ca_certs": "/etc/ca.pem"}
    conn = Connection(conf["broker_url"], transport=conf["broker_transport"], ssl=conf["broker_use_ssl"])
    assert conn.ssl == conf["broker_use_ssl"] and conn.transport_cls == QUARANTINING_TRANSPORT


def test_each_scheme_gets_its_transport():
    assert broker_transport(parse_redis_url("redis://h/0")) == QUARANTINING_TRANSPORT
    assert broker_transport(parse_redis_url(SENTINELS, master="m")) == QUARANTINING_SENTINEL_TRANSPORT
    assert broker_transport(parse_redis_url("rediss://h/0")) == QUARANTINING_TRANSPORT  # over TLS
    assert broker_transport(parse_redis_url("unix:///run/redis.sock")) is None  # kombu's


def test_a_failed_connection_keeps_our_transport_and_the_password(monkeypatch):
    """kombu switches to the next `;` entry when a connection fails, re-parsing it: without our failover
    strategy the entry's scheme would replace our transport and its (absent) password the master's."""
    monkeypatch.setenv("OPSQ_REDIS_URL", SENTINELS)
    monkeypatch.setenv("OPSQ_REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("OPSQ_REDIS_PASSWORD", "master-secret")
    conf = celery_config(Settings())
    assert conf["broker_failover_strategy"] is stay_on_the_sentinels
    conn = Connection(conf["broker_url"], transport=conf["broker_transport"],
                      failover_strategy=conf["broker_failover_strategy"])
    for _ in range(4):
        conn.maybe_switch_next()  # what kombu does on a connection error; nothing is connected to
        assert conn.transport_cls == QUARANTINING_SENTINEL_TRANSPORT
        assert (conn.password, conn.virtual_host, conn.hostname, conn.port) == ("master-secret", "3", "10.0.0.1", 26379)
        assert conn.alt == conf["broker_url"].split(";")  # every Sentinel still known to the channel
    plain = Connection(conf["broker_url"], transport=conf["broker_transport"])  # kombu's round robin
    plain.maybe_switch_next()
    assert plain.transport_cls == "sentinel" and plain.password is None  # what the strategy prevents
    assert celery_config(Settings(redis_url="redis://h/0"))["broker_failover_strategy"] is None


def test_a_closed_sentinel_channel_fails_as_a_connection_error():
    """An ack on a channel closed by a lost connection (a task that outlived it): Celery logs a connection
    error and goes on; the AttributeError kombu would raise stops the worker."""
    channel = SentinelChannel.__new__(SentinelChannel)  # as close() leaves it: no connection
    channel.connection = None
    with pytest.raises(redis.ConnectionError, match="channel is closed"):
        channel._connparams()


def test_the_sentinel_transport_carries_our_channel_behaviour():
    module, _, name = QUARANTINING_SENTINEL_TRANSPORT.partition(":")
    assert getattr(importlib.import_module(module), name) is SentinelTransport
    assert SentinelTransport.Channel is SentinelChannel
    assert SentinelTransport.default_port == 26379
    mro = SentinelChannel.__mro__
    assert mro.index(OpsqChannelMixin) < mro.index(kombu_redis.SentinelChannel)  # ours first
