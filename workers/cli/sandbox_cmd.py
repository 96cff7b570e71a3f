"""opsq sandbox: the local emulator of the platforms."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
def sandbox(host: str, port: int) -> None:
    """Serve the platform sandbox (point OPSQ_PLATFORM_BASE_URL at it)."""
    from executors.sandbox.server import serve_forever

    serve_forever(host, port)


def register(cli: click.Group) -> None:
    cli.add_command(sandbox)
