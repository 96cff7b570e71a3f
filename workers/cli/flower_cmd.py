"""opsq flower: Flower on the opsqueue Celery app, behind basic authentication."""

from __future__ import annotations

import ipaddress
import os

import click

from workers.errors import ConfigError


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _url(address: str, port: int) -> str:
    host = "127.0.0.1" if address in ("", "0.0.0.0") else ("[::1]" if address == "::" else address)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: OPSQ_FLOWER_PORT, 5555).")
@click.option("--address", help="Address to bind (default: OPSQ_FLOWER_ADDRESS, 0.0.0.0).")
@click.option("--unauthenticated-local", is_flag=True,
              help="Start without OPSQ_FLOWER_USER/OPSQ_FLOWER_PASSWORD; binds 127.0.0.1 only.")
def flower(port: int | None, address: str | None, unauthenticated_local: bool) -> None:
    """Start Flower (workers, tasks, queues) with basic auth from OPSQ_FLOWER_USER and
    OPSQ_FLOWER_PASSWORD. Refuses to start without them unless --unauthenticated-local."""
    from workers.observability.config import observability_settings

    settings = observability_settings()
    user = (settings.flower_user or "").strip()
    password = settings.flower_password.get_secret_value() if settings.flower_password else ""
    port = port or settings.flower_port
    credentials: str | None = None
    if user or password:
        if not (user and password):
            raise ConfigError("set both OPSQ_FLOWER_USER and OPSQ_FLOWER_PASSWORD (one of them is empty)")
        if ":" in user:
            raise ConfigError("OPSQ_FLOWER_USER must not contain ':'")
        credentials = f"{user}:{password}"
    if unauthenticated_local:
        if address and not _is_loopback(address):
            raise ConfigError(f"--unauthenticated-local binds 127.0.0.1 only; drop --address {address}")
        address = "127.0.0.1"
    elif credentials is None:
        raise ConfigError("Flower needs authentication: set OPSQ_FLOWER_USER and OPSQ_FLOWER_PASSWORD "
                          "(or use --unauthenticated-local to serve on 127.0.0.1 only)")
    address = address or settings.flower_address

    from workers.cli.broker import ensure_broker

    _, owned = ensure_broker()
    if owned:
        click.echo("started embedded Redis (stops with Flower)", err=True)

    # The credentials go to Flower's options in this process, not through argv (visible in `ps`) or the
    # environment of anything Flower starts. FLOWER_BASIC_AUTH would override them: ours is the only source.
    import flower.command  # noqa: F401 - defines Flower's tornado options
    from tornado.options import options

    os.environ.pop("FLOWER_BASIC_AUTH", None)
    if credentials:
        options.basic_auth = [credentials]
        os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
        how = f"basic auth, user {user!r}"
    else:
        options.basic_auth = []
        # Flower's API answers 401 without auth unless told this is deliberate.
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
        how = "no authentication, local only"
    click.echo(f"Flower: {_url(address, port)} ({how})")
    from workers.celery_app import app

    try:
        app.start(argv=["flower", f"--port={port}", f"--address={address}"])
    except OSError as exc:
        raise ConfigError(f"cannot serve Flower on {address}:{port}: {exc.strerror or exc}") from None


def register(cli: click.Group) -> None:
    cli.add_command(flower)
