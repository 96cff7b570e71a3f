"""opsq circuit / ratelimit / idempotency: the Redis guards, for operators."""

from __future__ import annotations

import click

from workers.cli.options import actor_option, json_option, read_only
from workers.cli.output import emit_json, table

STATE_COLOURS = {"closed": "green", "half_open": "yellow", "open": "red"}


def _state(state: str) -> str:
    return click.style(state.upper(), fg=STATE_COLOURS.get(state, "white"), bold=True)


def _platforms(platform: str | None) -> list[str]:
    from workers.queues import PLATFORM_QUEUES  # the registry loads every executor: when a command runs

    return [platform] if platform else list(PLATFORM_QUEUES)


@click.group()
def circuit() -> None:
    """Circuit breakers, one per platform, shared by every worker."""

@circuit.command("status")
@click.argument("platform", required=False)
@json_option
@read_only
def circuit_status(platform: str | None, as_json: bool) -> None:
    """State, failures in the window, time until half-open."""
    from workers.guards import breaker

    items = [breaker.status(p) for p in _platforms(platform)]
    if as_json:
        emit_json([s.to_dict() for s in items] if platform is None else items[0].to_dict())
        return
    rows = []
    for s in items:
        until = "until reset" if s.forced_open else (
            f"{s.seconds_until_half_open:.1f}s" if s.seconds_until_half_open is not None else "-")
        rows.append([s.platform, _state(s.state), f"{s.failures_in_window}/{s.failure_threshold}",
                     f"{s.window_s:g}s", until, f"{s.probes_in_flight}/{s.half_open_max}"])
    table(["PLATFORM", "STATE", "FAILURES", "WINDOW", "HALF-OPEN IN", "PROBES"], rows)

@circuit.command("reset")
@click.argument("platform")
@click.option("--reason", default="", help="Why (recorded).")
@actor_option
def circuit_reset(platform: str, reason: str, actor: str) -> None:
    """Close the breaker now (recorded in the history with who and why)."""
    from workers.guards import breaker

    previous = breaker.reset(platform, actor, reason)
    click.echo(f"circuit {platform}: {previous} -> closed (by {actor})")

@circuit.command("open")
@click.argument("platform")
@click.option("--reason", default="", help="Why (recorded).")
@actor_option
def circuit_open(platform: str, reason: str, actor: str) -> None:
    """Force the breaker open until `opsq circuit reset` (maintenance, incidents)."""
    from workers.guards import breaker

    previous = breaker.force_open(platform, actor, reason)
    click.echo(f"circuit {platform}: {previous} -> open, held open until `opsq circuit reset {platform}` "
               f"(by {actor})")

@circuit.command("history")
@click.argument("platform", required=False)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
@read_only
def circuit_history(platform: str | None, limit: int, as_json: bool) -> None:
    """Every transition: time, from, to, reason (newest first)."""
    from workers.guards import breaker

    entries = breaker.history(platform, limit)
    if as_json:
        emit_json(entries)
        return
    if not entries:
        click.echo("no transitions recorded")
        return
    table(["TIME (UTC)", "PLATFORM", "FROM", "TO", "REASON"],
          [[breaker.format_time(e["at"]), e["platform"], e["from"], _state(e["to"]), e["reason"]]
           for e in entries])

@click.group()
def ratelimit() -> None:
    """Rate and concurrency limits: per platform and per key (a channel, a token), shared by every worker."""

def _rate(value: str | None) -> str:
    from workers.settings import format_rate

    return "-" if not value else format_rate(float(value))

@ratelimit.command("status")
@click.argument("platform", required=False)
@json_option
@read_only
def ratelimit_status(platform: str | None, as_json: bool) -> None:
    """Each platform's bucket, its limits per key, and every key waiting now (no token, paused after a 429, or
    at its concurrency limit)."""
    from workers.guards import ratelimit as rl

    items = [rl.status(p) for p in _platforms(platform)]
    if as_json:
        emit_json(items if platform is None else items[0])
        return
    table(["PLATFORM", "RATE", "BURST", "TOKENS NOW", "PAUSED FOR", "WAITS", "SOURCE"],
          [[i["platform"], "unlimited" if i["unlimited"] else _rate(i["rate_per_s"]), i["burst"],
            "-" if i["tokens_available"] is None else f"{i['tokens_available']:.2f}",
            f"{i['paused_for_s']:.1f}s" if i["paused_for_s"] else "-", i["waits_total"], i["source"]]
           for i in items])
    rules = [(i["platform"], rule) for i in items for rule in i["limits"]]
    if rules:
        click.echo("")
        table(["PLATFORM", "PER", "RATE", "BURST", "CONCURRENCY", "SOURCE"],
              [[p, r["per"], _rate(r["rate_per_s"]), r["burst"] or "-", r["concurrency"] or "-", r["source"]]
               for p, r in rules])
    waiting = [(i["platform"], w) for i in items for w in i["waiting"]]
    click.echo("")
    if not waiting:
        click.echo("no key is waiting")
        return
    table(["PLATFORM", "PER", "KEY", "STATE", "FOR", "DETAIL"],
          [[p, w["per"], w["key"], click.style(w["state"].upper(), fg="red" if w["state"] == "paused" else "yellow"),
            f"{w['for_s']:.2f}s" if w.get("for_s") is not None else "-",
            f"{w['running']}/{w['concurrency']} running" if w["state"] == "concurrency"
            else f"{w['tokens']:.2f} tokens" if w.get("tokens") is not None else "-"]
           for p, w in waiting])

@ratelimit.command("set")
@click.argument("platform")
@click.option("--per", "per", metavar="KIND", help="Per key of this kind (channel, token, spreadsheet, or any "
              "param's name); without it, the platform's own bucket.")
@click.option("--rate", "rate", metavar="RATE", help="1/s, 50/min, 1000/h, 5/10s; 0 or off: no rate limit.")
@click.option("--burst", type=click.IntRange(min=1), help="Calls allowed at once after a quiet spell (default 1 "
              "per key).")
@click.option("--concurrency", type=click.IntRange(min=0), help="At most this many of a key's actions calling at "
              "once (needs --per); 0: no limit.")
@click.option("--reason", default="", help="Why (recorded).")
@actor_option
def ratelimit_set(platform: str, per: str | None, rate: str | None, burst: int | None, concurrency: int | None,
                  reason: str, actor: str) -> None:
    """Change a limit for every running worker at once (their next admission), without a restart. Fields not
    given keep their value; `opsq ratelimit unset` goes back to the settings' (OPSQ_RATE_LIMITS, OPSQ_KEY_LIMITS)."""
    from workers.guards import ratelimit as rl
    from workers.settings import parse_rate

    fields = rl.set_limit(platform, per, rate=None if rate is None else parse_rate(rate), burst=burst,
                          concurrency=concurrency, actor=actor, reason=reason)
    shown = ", ".join(f"{k} {_rate(v) if k == 'rate' else v}" for k, v in sorted(fields.items()))
    click.echo(f"rate limit {platform}{f' per {per}' if per else ''}: {shown} (by {actor}; every worker applies it "
               "at its next admission)")

@ratelimit.command("unset")
@click.argument("platform")
@click.option("--per", "per", metavar="KIND", help="The limit per key of this kind; without it, the platform's own "
              "bucket.")
@click.option("--all", "every", is_flag=True, help="Every runtime change of the platform.")
@click.option("--reason", default="", help="Why (recorded).")
@actor_option
def ratelimit_unset(platform: str, per: str | None, every: bool, reason: str, actor: str) -> None:
    """Drop a runtime change (`opsq ratelimit set`): the settings' limit applies again, on every worker."""
    from workers.errors import NotFound
    from workers.guards import ratelimit as rl

    what = f"rate limit {platform}" + (" (all)" if every else f" per {per}" if per else "")
    if not rl.unset_limit(platform, per, every=every, actor=actor, reason=reason):
        raise NotFound(f"{what}: no runtime change to drop")
    click.echo(f"{what}: back to the settings' values (by {actor})")

@click.group()
def idempotency() -> None:
    """Idempotency keys: one key, one action."""

@idempotency.command("show")
@click.argument("key")
@json_option
@read_only
def idempotency_show(key: str, as_json: bool) -> None:
    """Which action a key names, and that action's execution record."""
    from workers.errors import NotFound
    from workers.guards import idempotency as idem

    info = idem.show(key)
    if info is None:
        raise NotFound(f"no idempotency key {key!r} (never used, cleared, or expired)")
    if as_json:
        emit_json(info)
        return
    click.echo(f"key       {key}")
    click.echo(f"action    {info['action_id']}")
    click.echo(f"expires   in {info['ttl_s']}s")
    record = info["execution"]
    if record is None:
        click.echo("execution not started (queued), or its record expired")
    else:
        click.echo(f"execution {record.get('state')} (attempt {record.get('attempt', '-')}, "
                   f"owner {record.get('owner', '-')})")

@idempotency.command("clear")
@click.argument("key")
@actor_option
def idempotency_clear(key: str, actor: str) -> None:
    """Forget a key so the next submit with it creates a new action."""
    from workers.errors import NotFound
    from workers.guards import idempotency as idem

    action_id = idem.clear(key, actor=actor)
    if action_id is None:
        raise NotFound(f"no idempotency key {key!r}")
    click.echo(f"cleared idempotency key {key!r} (it named action {action_id})")


def register(cli: click.Group) -> None:
    cli.add_command(circuit)
    cli.add_command(ratelimit)
    cli.add_command(idempotency)
