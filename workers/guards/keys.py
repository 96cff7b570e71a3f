"""Every Redis key the guards use, in one place (docs/ARCHITECTURE.md lists them)."""

from __future__ import annotations

PREFIX = "opsq"


def run(action_id: str) -> str:
    """Hash: the execution record of one action (running lease, or done/failed with its outcome)."""
    return f"{PREFIX}:run:{action_id}"


def breaker(platform: str) -> str:
    """Hash: state, opened_at, changed_at, forced."""
    return f"{PREFIX}:cb:{platform}"


def breaker_failures(platform: str) -> str:
    """Sorted set: health failures inside the rolling window (score = time)."""
    return f"{PREFIX}:cb:{platform}:fails"


def breaker_probes(platform: str) -> str:
    """Sorted set: the half-open probes in flight, member = attempt token, score = when its lease ends.
    A probe whose worker died stops counting once its lease has passed."""
    return f"{PREFIX}:cb:{platform}:probes"


def breaker_history(platform: str) -> str:
    """List: JSON transitions, newest first, capped."""
    return f"{PREFIX}:cb:{platform}:history"


def rate_bucket(platform: str) -> str:
    """Hash: tokens, ts (the token bucket), paused_until (a 429's pause, when the action had no key's bucket)."""
    return f"{PREFIX}:rl:{platform}"


def key_bucket(platform: str, kind: str, digest: str) -> str:
    """Hash: tokens, ts, paused_until of one key's token bucket (workers.guards.limits): `digest` is a hash of
    the key's value (a channel, a token), never the value itself. Expires when idle, like the platform's."""
    return f"{PREFIX}:rl:{platform}:{kind}:{digest}"


def key_leases(platform: str, kind: str, digest: str) -> str:
    """Sorted set: one key's concurrency leases, member = attempt token, score = when its lease ends. A lease
    whose worker died stops counting once it has ended, as the breaker's probes do."""
    return f"{PREFIX}:cc:{platform}:{kind}:{digest}"


def limits_waiting(platform: str) -> str:
    """Sorted set: the limited keys that made an action wait, or were paused by a 429, recently: member =
    "<key>|<kind>|<label>", score = until when (what `opsq ratelimit status` lists as waiting)."""
    return f"{PREFIX}:rl:{platform}:waiting"


def ratelimit_config() -> str:
    """Hash: the operators' runtime limits (`opsq ratelimit set`), one JSON field per platform, and `version`,
    raised at each change: the admit script compares it with the worker's, so a change reaches every worker at
    its next admission."""
    return f"{PREFIX}:ratelimit:config"


def stats(platform: str) -> str:
    """Hash: counters (calls, ok, failed, health_failures, waits)."""
    return f"{PREFIX}:stats:{platform}"


def metrics() -> str:
    """Hash: the workers' counters and duration histograms, written by the settle script
    (workers.observability.metrics reads them): one for the fleet, so every worker's count adds up."""
    return f"{PREFIX}:metrics"


def cancel(action_id: str) -> str:
    """String: set when the action is cancelled (workers.cancel), JSON {by, at, why}; ADMIT refuses it."""
    return f"{PREFIX}:cancel:{action_id}"


def idempotency(key: str) -> str:
    """String: the id of the action submitted with this idempotency key."""
    return f"{PREFIX}:idem:{key}"


def outcome_channel(action_id: str) -> str:
    """Pub/sub channel: a message the moment the action's outcome is final (workers.waiting). Not a key:
    nothing is stored, and a publish nobody listens to costs nothing."""
    return f"{PREFIX}:outcome:{action_id}"


def workflow_channel(workflow_id: str) -> str:
    """Pub/sub channel: a message each time the workflow's status changes (workflows.state.transition)."""
    return f"{PREFIX}:workflow:{workflow_id}"


def action_keys(platform: str, action_id: str) -> list[str]:
    """KEYS of the ADMIT and SETTLE scripts, in their order (workers.guards.scripts)."""
    return [run(action_id), breaker(platform), breaker_failures(platform), breaker_history(platform),
            rate_bucket(platform), stats(platform), breaker_probes(platform), metrics(), cancel(action_id)]


def api_auth_failures(address: str) -> str:
    """String: failed authentications from one client address in the current window (workers.api.failed_auths),
    shared by every `opsq api` process on this Redis."""
    return f"{PREFIX}:api:authfail:{address}"
