"""Write-behind of the worker's success records: one commit per batch instead of one per action.

Why it exists: on the worker's hot path the success UPDATE was the largest cost after the broker itself
(on PostgreSQL a transaction is three round trips, and the server's CPU shares the machine with the
workers). By the time a success reaches this module it is already durable where it matters for
correctness: the guards' settle wrote the outcome to Redis (the execution record), so a redelivered
message returns the stored result without calling the platform again.

So each worker process keeps a short buffer, and a flusher thread commits it: at once when BATCH rows
are waiting, else OPSQ_OUTCOME_FLUSH_MS (default 50 ms) after the first row of a batch arrived (0 writes
each success at once, as before). The thread sleeps while the buffer is empty and wakes once per batch:
a thread polling on a short tick took the GIL from the task thread every few milliseconds and cost more
than it saved, and a task that committed the full batch itself waited for the database meanwhile instead
of taking its next message. On PostgreSQL a batch of 16 cost a quarter of the client CPU per row of
single writes here (docs/PERFORMANCE.md). What a crash costs: a SIGKILLed process loses at most its
unflushed buffer; those actions stay `queued` in the database until `detect_stuck` finds their outcome
in Redis and records it (`opsq queue stuck` shows them as "reconciled"). A database that refuses a
batch keeps it buffered and retried with backoff; past MAX_BUFFERED the task itself writes (and its
bookkeeping retry takes over if that fails too), so memory stays bounded. A batch is forgotten once its
commit returns, so that commit is durable (store.mark_succeeded_many), never left to PostgreSQL's WAL
writer: a server crash right after it must not undo it.

With the guards off (OPSQ_GUARDS_ENABLED=false) there is no outcome in Redis to fall back on, so
successes are written at once.

Only standalone actions come here: a workflow step's success is written at once, because the next
step's templates read it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from datetime import datetime
from typing import Any

from workers.settings import get_settings
from workers.store import actions

log = logging.getLogger("opsq.outcomes")

MAX_BUFFERED = 10_000
BATCH = 16


class OutcomeWriter:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._pending: list[dict[str, Any]] = []
        self._cond = threading.Condition()  # guards _pending and _stopped; wakes the flusher
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="opsq-outcomes", daemon=True)
        self._thread.start()

    def add(self, row: dict[str, Any]) -> None:
        with self._cond:
            overfull = len(self._pending) >= MAX_BUFFERED
        if overfull:
            # The database has refused for a while: the task writes, and if that fails too its row is
            # not buffered (the task's bookkeeping retry and detect_stuck have it, from Redis).
            self.flush()
        with self._cond:
            self._pending.append(row)
            if len(self._pending) in (1, BATCH):  # a batch has begun, or is full
                self._cond.notify()

    def flush(self) -> int:
        """Commits what is buffered; raises (keeping the rows) if the database refuses."""

        with self._cond:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            actions.mark_succeeded_many(batch)
        except Exception:
            with self._cond:
                self._pending[:0] = batch
            raise
        return len(batch)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)
        try:
            self.flush()
        except Exception:
            log.exception("could not record %d buffered outcome(s); detect_stuck will take them from Redis",
                          len(self._pending))

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:
                    self._cond.wait_for(lambda: self._stopped, timeout=backoff)
                else:
                    # Asleep until a batch begins; then until it is full, or its interval has passed.
                    self._cond.wait_for(lambda: self._pending or self._stopped)
                    self._cond.wait_for(lambda: len(self._pending) >= BATCH or self._stopped,
                                        timeout=self.interval_s)
                if self._stopped:
                    return
            try:
                self.flush()
                backoff = 0.0
            except Exception:
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.warning("recording buffered outcomes failed; retrying in %.1fs", backoff, exc_info=True)


_writer: tuple[int, OutcomeWriter] | None = None
_writer_lock = threading.Lock()


def writer() -> OutcomeWriter | None:
    """This process's writer (made on first use, and again after a fork), or None when write-behind is
    off (OPSQ_OUTCOME_FLUSH_MS=0, or no guards: then no outcome is in Redis to fall back on)."""
    global _writer

    settings = get_settings()
    interval_ms = settings.outcome_flush_ms
    if interval_ms <= 0 or not settings.guards_enabled:
        return None
    pid = os.getpid()
    if _writer is not None and _writer[0] == pid:
        return _writer[1]
    with _writer_lock:
        if _writer is None or _writer[0] != pid:
            _writer = (pid, OutcomeWriter(interval_ms / 1000))
        return _writer[1]


def record_success(action_id: str, attempt: int, result: dict[str, Any], started_at: datetime | None, *,
                   reconciled: bool = False) -> None:
    """The success record of a standalone action: buffered when write-behind is on, else written now."""

    w = writer()
    if w is None:
        actions.mark_succeeded(action_id, attempt, result, started_at, reconciled=reconciled)
    else:
        w.add(actions.succeeded_row(action_id, attempt, result, started_at, reconciled=reconciled))


def shutdown() -> None:
    """Flushes and stops this process's writer (worker process shutdown, interpreter exit)."""
    global _writer
    with _writer_lock:
        current, _writer = _writer, None
    if current is not None and current[0] == os.getpid():
        current[1].stop()


atexit.register(shutdown)
