"""The store's connections on a real PostgreSQL server: a forked worker child leaves its parent's
database sessions alone."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import text

from workers.celery_app import _fresh_connections_after_fork
from workers.store import db

pytestmark = pytest.mark.integration


def test_a_forked_worker_child_leaves_the_parents_connections_open(pg_url):
    def backend_pids() -> tuple[int, int]:
        with db.get_engine().connect() as conn:
            main = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with db.outcome_engine().connect() as conn:
            outcome = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        return main, outcome

    before = backend_pids()
    assert db.outcome_engine() is not db.get_engine()  # both engines are in play (async commit)
    child = os.fork()
    if child == 0:  # a Celery prefork child: worker_process_init
        code = 1
        try:
            _fresh_connections_after_fork()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's server sessions are all still there: the child closed none of them. (Which pooled connection
    # the next checkout gets is the pool's choice, so the sessions are looked up, not the next checkout's pid.)
    time.sleep(0.3)  # a session the child had closed would be gone from the server by now
    with db.get_engine().connect() as conn:
        alive = set(conn.execute(text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                                 {"pids": list(before)}).scalars())
    assert alive == set(before)
