"""opsq sandbox: the local emulator of the platforms."""

from __future__ import annotations

import click

from workers.dev import stack


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535),
              help=f"[default: {stack.SANDBOX_PORT}, or a free one when that is taken; 0: any free one]")
def sandbox(host: str, port: int | None) -> None:
    """Serve the platform sandbox; it prints the settings that point opsqueue at it. (`opsq dev` also
    starts a worker and beat, configured for it.)"""
    server, note = stack.bind_sandbox(host, stack.SANDBOX_PORT if port is None else port, fallback=port is None)
    try:  # Ctrl-C from here on (even before it serves) stops it quietly
        if note:
            click.echo(click.style("note: ", fg="yellow", bold=True) + note)
        # Listening on every interface: this machine reaches it on loopback (other hosts: by this host's name).
        everywhere = server.host in ("0.0.0.0", "::")
        url = f"http://127.0.0.1:{server.port}" if everywhere else server.url
        where = " on this machine (elsewhere: this host's name for 127.0.0.1)" if everywhere else ""
        click.echo(f"opsq sandbox listening on {server.url}; these settings point opsqueue{where} at it "
                   "(its workers too):")
        for line in stack.export_lines(stack.sandbox_settings(url)):
            click.echo(f"    {line}")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def register(cli: click.Group) -> None:
    cli.add_command(sandbox)
