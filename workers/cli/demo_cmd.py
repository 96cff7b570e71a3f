"""opsq demo."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--quick", is_flag=True, help="Fewer actions per scenario (used by the tests).")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="Write the summary as JSON.")
@click.option("--use-configured", is_flag=True,
              help="Use OPSQ_REDIS_URL / OPSQ_DATABASE_URL instead of a throw-away embedded Redis and SQLite.")
@click.option("--no-color", is_flag=True, help="Plain output.")
@click.option("--flower", is_flag=True, help="Also start Flower (local only) and print its URL.")
@click.pass_context
def demo(ctx: click.Context, quick: bool, json_out: Path | None, use_configured: bool, no_color: bool,
         flower: bool) -> None:
    """Run the demo scenarios end to end on this machine (embedded Redis, sandbox, a real worker)."""
    from workers.cli.demo import run_demo

    if no_color:
        ctx.color = False
    if not run_demo(quick=quick, json_out=json_out, use_configured=use_configured, flower=flower):
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(demo)
