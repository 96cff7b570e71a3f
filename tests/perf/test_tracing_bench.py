"""What tracing costs the workers (issue 13, item 2): noop throughput of a worker with OPSQ_TRACING off and one
with it on (exporting every span over OTLP/HTTP), against plain Celery on the same Redis, side by side.

Drain mode (tests/perf/test_pipeline_bench.py): the queue is filled while no worker consumes it, then one worker
is let at it and timed alone, so the figure is the worker's hot path (the spans it makes: the Celery task's,
`opsq.attempt`, the platform call's, and their export), not the client's. The rounds alternate plain, tracing
off, tracing on, so drift on the machine hits all three. The spans go to a sink that reads each request and
answers 200 without decoding it (a collector runs elsewhere; decoding here would take this machine's CPU from
the worker being timed). Prints the ratios; asserts nothing about speed, only that the traced worker did send
spans and every action succeeded.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import _configure
from tests.perf.baseline_app import app
from tests.perf.test_pipeline_bench import Opsq, Plain
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.perf

N = int(os.environ.get("OPSQ_BENCH_N", "500"))
ROUNDS = int(os.environ.get("OPSQ_BENCH_ROUNDS", "3"))


class Sink:
    """An OTLP/HTTP endpoint that accepts every export and counts the requests and bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                self.rfile.read(n)
                sink.requests += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.stop()


def _drain(side: Any, n: int, consumer: str, idle: list[str]) -> float:
    """Fill the noop queue while no worker consumes it, then let `consumer` alone at it."""
    for name in [consumer, *idle]:
        app.control.cancel_consumer("noop", destination=[name], reply=True, timeout=5)
    submitted = side.submit(app, n)
    start = time.perf_counter()
    app.control.add_consumer("noop", destination=[consumer], reply=True, timeout=5)
    side.wait(app, submitted)
    elapsed = time.perf_counter() - start
    side.check(submitted)
    return n / elapsed


def test_tracing_cost_against_plain_celery(redis_client, redis_url, sandbox, sandbox_client, monkeypatch, tmp_path,
                                           sink: Sink):
    env = _configure(redis_url, f"sqlite:///{tmp_path / 'bench.db'}", sandbox, monkeypatch)()
    traced_env = {**env, "OPSQ_TRACING": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    off = WorkerProcess(env, "noop", concurrency=2, log_dir=tmp_path, app="tests.perf.baseline_app").start()
    on = WorkerProcess(traced_env, "noop", concurrency=2, log_dir=tmp_path, app="tests.perf.baseline_app").start()
    try:
        rates: dict[str, list[float]] = {"plain": [], "off": [], "on": []}
        sides = {"plain": (Plain, off.name, [on.name]), "off": (Opsq, off.name, [on.name]),
                 "on": (Opsq, on.name, [off.name])}
        for side, consumer, idle in sides.values():  # warm up each
            _drain(side, 50, consumer, idle)
        for _ in range(ROUNDS):
            for label, (side, consumer, idle) in sides.items():
                rates[label].append(_drain(side, N, consumer, idle))
        time.sleep(1)  # the batch span processor's last export
        assert sink.requests > 0, "the traced worker exported no spans"
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\n[tracing, drain] N={N} rounds={ROUNDS}  plain celery {med['plain']:.0f}/s "
              f"{[round(x) for x in rates['plain']]}  opsqueue tracing off {med['off']:.0f}/s "
              f"{[round(x) for x in rates['off']]}  tracing on {med['on']:.0f}/s {[round(x) for x in rates['on']]}")
        print(f"  ratios: off/plain {med['off'] / med['plain']:.2f}x  on/plain {med['on'] / med['plain']:.2f}x  "
              f"on/off {med['on'] / med['off']:.2f}x  ({sink.requests} OTLP exports, {sink.bytes / 1e6:.1f} MB)")
    finally:
        on.stop()
        off.stop()
