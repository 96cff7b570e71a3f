"""opsq health, validate-env, test-auth: is everything there and configured right?"""

from __future__ import annotations

import click

from workers.cli.options import json_option, print_checks, read_only


@click.command()
@click.option("--strict", is_flag=True, help="Warnings count as unhealthy too.")
@json_option
@read_only
def health(strict: bool, as_json: bool) -> None:
    """Redis (and its memory: maxmemory, policy), database, workers and their queues, beat, breakers, Flower.
    Exit 1 when unhealthy."""
    from beat import health as beat_health
    from workers.ops.health import health as run_checks

    checks = run_checks(more=beat_health.checks)
    print_checks(checks, as_json)
    bad = {"fail", "warn"} if strict else {"fail"}
    if any(c.status in bad for c in checks):
        raise SystemExit(1)

@click.command("validate-env")
@json_option
@read_only
def validate_env(as_json: bool) -> None:
    """Every OPSQ_ setting (secrets masked) and what is wrong with them. A platform with no token is FAIL on its
    real API, WARN on the sandbox. Exit 1 on any FAIL."""
    from beat.schedule import build
    from workers.ops.health import FAIL, Check
    from workers.ops.health import validate_env as run_checks
    from workers.settings import get_settings

    checks = run_checks()
    try:
        build(get_settings())
    except ValueError as exc:
        checks.append(Check("OPSQ_BEAT_INTERVALS", FAIL, str(exc)))
    print_checks(checks, as_json)
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)

@click.command("test-auth")
@click.argument("platform", required=False)
@click.option("--workers", "ask_workers", is_flag=True,
              help="Ask the running workers which credentials they hold (fingerprints, never the values) and "
                   "compare with this shell's: a stale worker shows as FAIL. Calls no platform.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=2.0, show_default=True,
              help="Seconds --workers waits for the workers' answers.")
@json_option
@read_only
def test_auth(platform: str | None, ask_workers: bool, timeout: float, as_json: bool) -> None:
    """Each platform's credentials against its configured base URL (this shell's settings), or with --workers
    what each running worker holds. Exit 1 if any fails."""
    if ask_workers:
        from workers.ops.worker_auth import worker_credentials

        checks = worker_credentials([platform] if platform else None, timeout=timeout)
    else:
        from workers.ops.health import test_auth as run_checks

        checks = run_checks([platform] if platform else None)  # None: every platform that needs a token
    print_checks(checks, as_json)
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(health)
    cli.add_command(validate_env)
    cli.add_command(test_auth)
