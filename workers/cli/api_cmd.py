"""opsq api: serve the HTTP API (workers.api), and manage its tokens."""

from __future__ import annotations

import click

from workers.cli.flower_cmd import _is_loopback, _url
from workers.cli.options import actor_option, json_option, read_only
from workers.cli.output import emit_json, table


@click.group(invoke_without_command=True)
@click.option("--host", help="Address to bind (default: OPSQ_API_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default: OPSQ_API_PORT, 8700).")
@click.pass_context
def api(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the JSON HTTP API (docs/API.md) at http://HOST:PORT/v1/...; OpenAPI at /openapi.json.

    Every request but GET /v1/health needs a token (`opsq api token create`). A non-loopback address is
    refused while no token exists."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from workers.api.app import create_app
    from workers.errors import ConfigError
    from workers.settings import get_settings
    from workers.store import api_tokens

    settings = get_settings()
    host = host or settings.api_host
    port = port or settings.api_port
    if not _is_loopback(host) and api_tokens.active_count() == 0:
        raise ConfigError(f"the API serves {host} only once a token exists: create one with `opsq api token create "
                          "NAME --role ROLE`, or bind 127.0.0.1")
    click.echo(f"serving the opsqueue API at {_url(host, port)}v1/ (docs: {_url(host, port)}docs)", err=True)
    # Several processes may serve one installation: what they share (the failed-authentication limit, Slack's
    # replay memory) is in Redis.
    # The client's address (what the failed-authentication limit counts by) is the connection's, unless it comes
    # from a proxy named in OPSQ_API_TRUSTED_PROXIES: uvicorn's default trusts X-Forwarded-For from 127.0.0.1, which
    # would let any local caller (or a proxy passing the header through) choose its address, guess without limit
    # and lock out others.
    proxies = settings.api_trusted_proxies
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)


@api.group("token")
def token() -> None:
    """API tokens: each has a name (what the audit trail records) and a role (submit, operate, approve, admin)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["submit", "operate", "approve", "admin"]), required=True,
              help="submit: submit, read its own; operate: also read all, cancel, replay, roll back, resume; "
                   "approve: read, approve and deny; admin: all of these.")
@click.option("--owner", help="The person the token acts for (as approval policies and OPSQ_SLACK_APPROVERS name "
                              "them): a workflow it submits may not be approved by that person under any name, "
                              "nor one that person submitted by the token.")
@actor_option
@json_option
def token_create(name: str, role: str, owner: str | None, actor: str, as_json: bool) -> None:
    """Create a token and print its secret, once: only its hash is kept."""
    from workers.store import api_tokens

    secret = api_tokens.create(name, role, owner=owner, actor=actor)
    if as_json:
        emit_json({"name": name, "role": role, "owner": owner, "token": secret})
        return
    owned = f", owner {owner}" if owner else ""
    click.echo(f"created API token {name} (role {role}{owned}); it is shown only now, keep it somewhere safe:",
               err=True)
    click.echo(secret)


@token.command("list")
@json_option
@read_only
def token_list(as_json: bool) -> None:
    """The tokens, without their secrets: name, role, owner, created, last used, revoked."""
    from workers.store import api_tokens

    items = api_tokens.tokens()
    if as_json:
        emit_json([t.to_dict() for t in items])
        return

    def ts(value: object) -> str:
        return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"

    table(["NAME", "ROLE", "OWNER", "CREATED (UTC)", "LAST USED (UTC)", "REVOKED (UTC)"],
          [[t.name, t.role, t.owner or "-", ts(t.created_at), ts(t.last_used_at), ts(t.revoked_at)] for t in items])


@token.command("owner")
@click.argument("name")
@click.argument("person")
@actor_option
def token_owner(name: str, person: str, actor: str) -> None:
    """Give token NAME its owner PERSON, or change it (a token made before owners existed has none: until it has
    one, its owner could approve what they submitted through it). Recorded in the audit trail."""
    from workers.store import api_tokens

    _, previous = api_tokens.set_owner(name, person, actor=actor)
    if previous == person:
        click.echo(f"API token {name} is owned by {person} already")
    else:
        was = f" (was {previous})" if previous else ""
        click.echo(f"API token {name} now acts for {person}{was}")


@token.command("revoke")
@click.argument("name")
@actor_option
def token_revoke(name: str, actor: str) -> None:
    """Revoke a token: refused (401) from its next request on."""
    from workers.store import api_tokens

    api_tokens.revoke(name, actor=actor)
    click.echo(f"revoked API token {name}")


def register(cli: click.Group) -> None:
    cli.add_command(api)
