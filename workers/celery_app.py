"""The Celery app. `celery -A workers.celery_app worker` and `opsq worker` both run it.

Importing this module connects to nothing and reads no broker URL: the app is configured on first use
(OpsqCelery.on_configure, run when something first reads `app.conf`, sends a task or starts a worker),
so task modules, the client API and the CLI import cleanly on a machine with no Redis configured."""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    celeryd_after_setup,
    task_revoked,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from workers import (
    # For what it registers: the remote-control command `opsq test-auth --workers` asks, in every worker of the app.
    credential_fingerprints,  # noqa: F401
    executor_pool,
    held_messages,
    observability,
    signal_scope,
)
from workers.broker_sentinel import stay_on_the_sentinels
from workers.dev.broker_url import RedisTarget, redis_target
from workers.guards import reset_guard
from workers.guards.connection import sentinel_kwargs
from workers.observability import tracing
from workers.ops import queue_ops
from workers.priorities import PRIORITY_STEPS, PRIORITY_VALUES
from workers.queues import celery_queues
from workers.settings import Settings, get_settings
from workers.store import db, outcomes

EXECUTE_ACTION = "opsq.execute_action"
QUARANTINING_TRANSPORT = "workers.broker_transport:Transport"
QUARANTINING_SENTINEL_TRANSPORT = "workers.broker_sentinel:SentinelTransport"


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> dict[str, str] | None:
    """So `send_task("opsq.execute_action", kwargs=...)` by name lands on the platform's queue too."""
    if name == EXECUTE_ACTION and isinstance(kwargs, dict) and "platform" in kwargs:
        return {"queue": kwargs["platform"], "routing_key": kwargs["platform"]}
    return None


def transport_options(settings: Settings) -> dict[str, Any]:
    vt = settings.visibility_timeout_s
    return {
        "visibility_timeout": vt,
        "priority_steps": list(PRIORITY_STEPS),
        # kombu sweeps unacked messages older than the visibility timeout back into their queue; by
        # default only every 10 x 10 s. Sweeping at most every 10 s (cheap) keeps redelivery prompt.
        "unacked_restore_interval": max(1, min(10, vt // 2)),
        "unacked_restore_throttle": 1,
    }


def broker_transport(target: RedisTarget) -> str | None:
    """Our transports (the quarantine, workers.broker_transport) for every scheme that has one; None leaves
    kombu's own (unix://). rediss:// is the plain transport over TLS: given by name, kombu no longer sees
    the scheme, so the TLS options are given as well (broker_use_ssl)."""
    return {"redis": QUARANTINING_TRANSPORT, "rediss": QUARANTINING_TRANSPORT,
            "sentinel": QUARANTINING_SENTINEL_TRANSPORT}.get(target.scheme)


def sentinel_options(target: RedisTarget) -> dict[str, Any]:
    """What kombu's and Celery's Sentinel support need besides the URL: the master's name and how to talk
    to the Sentinels (their password). Nothing for a single server."""
    if not target.is_sentinel:
        return {}
    return {"master_name": target.master, "sentinel_kwargs": sentinel_kwargs(target)}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The whole configuration, from the settings. Resolving the broker may look for the embedded Redis
    (workers.dev.broker_url): that is why this runs when the app is first used, not at import."""
    target = redis_target(settings)
    url = target.url
    return dict(
        # Task modules are named, not imported: workflows and beat sit above workers and plug their tasks
        # in when a worker loads (OPSQ_TASK_MODULES).
        include=settings.task_modules,
        broker_url=url,
        # kombu's Redis transport with a quarantine for items that are not messages (workers.broker_transport):
        # one bad item on a queue must not stop a worker; for sentinel:// too (workers.broker_sentinel).
        broker_transport=broker_transport(target),
        # kombu would "fail over" along the Sentinels' URLs and lose our transport and the password on the way;
        # the Sentinel client does the failing over (workers.broker_sentinel).
        broker_failover_strategy=stay_on_the_sentinels if target.is_sentinel else None,
        # rediss://: TLS for the broker and the result backend, the URL's options (certificate checked unless
        # it says ssl_cert_reqs=none); the guards' client gets the same (workers.guards.connection).
        broker_use_ssl=target.ssl,
        redis_backend_use_ssl=target.ssl,
        # ... and a consumer that quarantines messages that are messages but cannot be run (unknown task, broken
        # arguments, pickle, no task header, oversized params): acked, logged without their body (workers.consumer).
        worker_consumer="workers.consumer:OpsqConsumer",
        result_backend=url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        # A backstop for a pool process stuck past the per-call limit itself (workers.attempt._time_limit stops
        # the platform call at the lease): Celery replaces the process. Generous, so that it never cuts a settle
        # that waits out a Redis blip (SETTLE_PATIENCE_S, 30 s) after a call that used its whole lease.
        task_time_limit=settings.lease_s + 60,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child or None,
        worker_max_memory_per_child=settings.worker_max_memory_per_child_kib or None,
        task_queues=celery_queues(),
        task_default_queue="control",
        task_routes=(route_task,),
        task_default_priority=PRIORITY_VALUES["normal"],
        broker_transport_options={**transport_options(settings), **sentinel_options(target)},
        result_backend_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "retry_policy": {"max_retries": 5, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
            **sentinel_options(target),
        },
        result_expires=settings.result_expires_s,
        # Not result_extended: it would copy every task's kwargs (an action's params, secrets and all) into
        # the result backend for result_expires. Flower reads kwargs from events, where they are redacted.
        result_extended=False,
        task_track_started=True,
        # task-sent events double every publish; Flower shows tasks from `received` on without them.
        task_send_sent_event=settings.task_sent_events,
        worker_send_task_events=True,
        task_allow_error_cb_on_chord_header=True,
        broker_connection_retry_on_startup=True,
        # A client must hear "Redis is down" in seconds, not after Celery's default minutes of retries.
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        redis_socket_connect_timeout=3,
        redis_retry_on_timeout=False,
        enable_utc=True,
        # beat/ supplies the schedule and a scheduler that runs it on one beat only (named, not imported).
        beat_scheduler="beat.scheduler:LeaderScheduler",
        timezone="UTC",
    )


class OpsqCelery(Celery):
    def on_configure(self) -> None:
        # A method, not a receiver of Celery's on_configure signal: Celery calls a method of that name
        # directly, so "no Redis configured" (ConfigError) reaches whoever first used the app, where a
        # signal would log it and carry on with Celery's defaults (amqp://localhost). The configuration
        # is handed over as the config source Celery reads right after this, not by `conf.update`: an
        # update would call back into the router (when the first use was `send_task`), which reads the
        # configuration being made, and so on forever.
        self.config_from_object(celery_config(get_settings()))


def create_app() -> Celery:
    app = OpsqCelery("opsqueue")
    # Sentry and structured logs (workers.observability) hook in through Celery's signals, as do the
    # worker's own hooks below; all of them for this app only (workers.signal_scope).
    observability.install(app)
    signal_scope.connect(after_setup_logger, app, _quiet_http_client, "opsq.worker.httpx_logs")
    signal_scope.connect(worker_init, app, _schema_ready, "opsq.worker.schema")
    signal_scope.connect(celeryd_after_setup, app, _skip_paused_queues, "opsq.worker.paused_queues")
    signal_scope.connect(celeryd_after_setup, app, _name_the_consumer, "opsq.worker.node_name")
    # Last of the setup hooks: celeryd_after_setup comes right before the pool forks its processes.
    signal_scope.connect(celeryd_after_setup, app, _freeze_before_fork, "opsq.worker.gc_freeze")
    signal_scope.connect(worker_process_init, app, _fresh_connections_after_fork, "opsq.worker.after_fork")
    signal_scope.connect(worker_process_shutdown, app, _flush_buffered_outcomes, "opsq.worker.flush_outcomes")
    signal_scope.connect(task_revoked, app, _record_revoke, "opsq.worker.revoked")
    return app


def _record_revoke(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    """A revoked action (Flower, `celery control revoke`) ends `cancelled` in the store, durably, as a cancel
    does (workers.cancel); otherwise its record would stay `queued` and detect_stuck would send it again."""
    if request is None or getattr(request, "task", None) != EXECUTE_ACTION:
        return
    from workers.cancel import revoked  # noqa: PLC0415 - the store and the guards, only in a worker

    try:
        revoked(str(request.id), expired=bool(expired))
    except Exception:  # a revoke must not take the worker's consumer down; detect_stuck still has the record
        logging.getLogger("opsq.worker").exception("could not record the revoke of action %s",
                                                   getattr(request, "id", "?"))


def _quiet_http_client(**_: Any) -> None:
    # httpx logs every request at INFO; the action's own log lines already say what was called.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _schema_ready(**_: Any) -> None:
    # Migrate (when OPSQ_AUTO_MIGRATE) before the worker says it is ready, not on its first action.
    db.get_engine()


def _name_the_consumer(sender: str, **_: Any) -> None:
    # The messages a worker holds are recorded under its node name, so `opsq worker forget NODE` finds them.
    held_messages.set_node(sender)


def _skip_paused_queues(sender: str, instance: Any, **_: Any) -> None:
    """`opsq queue pause` is remembered: a worker started while a queue is paused does not consume it."""
    queues = instance.app.amqp.queues
    selected = list(queues.consume_from.keys())
    for queue in queue_ops.skip_paused_queues(sender, selected):
        queues.deselect(queue)
        logging.getLogger("opsq.worker").warning("queue %s is paused (opsq queue resume %s); not consuming it",
                                                 queue, queue)


def _freeze_before_fork(**_: Any) -> None:
    """What the parent holds (the modules, the app, the settings) moves out of the collector's reach before
    the pool forks. A collection walks every object it tracks and writes to each one's header, so each pool
    process (and the parent itself) would make a private copy of nearly every page it shares with the parent;
    frozen, they stay shared (fork is copy-on-write). Python's own advice for a process that forks workers
    (gc.freeze); the frozen objects live as long as the worker, as they would anyway."""
    gc.freeze()


def _fresh_connections_after_fork(**_: Any) -> None:
    # A prefork child must not share the parent's DB or HTTP sockets.
    db.reset_engine(close=False)
    executor_pool.reset()
    reset_guard()
    tracing.setup("opsqueue-worker")  # OPSQ_TRACING: the exporter's thread is the child's own


def _flush_buffered_outcomes(**_: Any) -> None:
    # A pool process that ends (warm shutdown, max_tasks_per_child) commits its buffered success records.
    outcomes.shutdown()
    tracing.flush()


app = create_app()
