"""Submits Slack messages ("m0", "m1", ...) one after another from a process of its own (a client, as a service
would run one), printing one JSON line per submit as it returns: {"i", "id"} or {"i", "error"}, with when it started
("at", epoch seconds) and how long it took ("s").

Its own process, so its Celery app is configured from its own environment (the test's Redis), whatever
the test process' app was configured with before.

    python -m tests.support.submit_loop COUNT PAUSE_S
"""

from __future__ import annotations

import json
import sys
import time

from workers.client import submit_action


def main() -> None:
    count, pause = int(sys.argv[1]), float(sys.argv[2])
    for i in range(count):
        started_at, start = time.time(), time.monotonic()
        try:
            handle = submit_action("slack", "send_message", {"channel": "#ha", "text": f"m{i}"})
            line: dict[str, object] = {"i": i, "id": handle.id}
        except Exception as exc:  # the caller is told: counted as refused by the test
            line = {"i": i, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
        line["at"], line["s"] = started_at, round(time.monotonic() - start, 3)
        print(json.dumps(line), flush=True)
        time.sleep(pause)


if __name__ == "__main__":
    main()
