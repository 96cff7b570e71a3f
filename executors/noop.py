"""noop: returns at once and touches nothing; for benchmarks and tests of the queue itself."""

from __future__ import annotations

from typing import Any

from executors.base import NO_EFFECT, ActionParams, Effect, Executor, Result, example


class NoopParams(ActionParams):
    """Do nothing and return `echo`: a test of the queue itself, no platform called."""

    model_config = example({"echo": "hello"})

    echo: Any = None


class NoopExecutor(Executor):
    platform = "noop"
    actions = {"noop": NoopParams}
    idempotent = frozenset({"noop"})  # no effect at all
    remote = False
    needs_token = False
    order = 1000  # last in listings: a test platform

    def do_noop(self, p: NoopParams, effect: Effect = NO_EFFECT) -> Result:
        return {"ok": True, "echo": p.echo}

    def undo_noop(self, p: NoopParams, result: Result, effect: Effect = NO_EFFECT) -> Result:
        return {"ok": True}

    def check_auth(self) -> Result:
        return {"ok": True, "platform": "noop"}
