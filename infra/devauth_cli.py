"""``voxagent token`` and ``voxagent dev-issuer``: the development issuer from the command line.

Attach them to the main CLI with ``cli.add_command(token_command)`` and
``cli.add_command(dev_issuer_command)``. They use the :class:`Settings` found in the click
context (``ctx.obj`` or a parent's), else read it from the environment.
"""

from __future__ import annotations

import click

from infra import devauth
from infra.settings import Settings


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    return settings if settings is not None else Settings()


@click.command("token")
@click.option("--space", "space_id", required=True, help="Space the token names.")
@click.option("--subject", default="dev-user", show_default=True, help="The token's `sub`.")
@click.option(
    "--ttl",
    "ttl_seconds",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Lifetime of the token in seconds.",
)
@click.option("--scope", "scopes", multiple=True, help="A scope to grant; repeat for more.")
@click.pass_context
def token_command(
    ctx: click.Context, space_id: str, subject: str, ttl_seconds: int, scopes: tuple[str, ...]
) -> None:
    """Print a bearer token signed by the development issuer."""
    settings = _settings(ctx)
    try:
        devauth.refuse_in_production(settings)
    except devauth.DevAuthRefused as exc:
        raise click.UsageError(str(exc)) from exc
    key = devauth.ensure_dev_key(settings.auth.dev_signing_key)
    click.echo(
        devauth.mint_token(
            key,
            issuer=settings.auth.issuer,
            audience=settings.auth.audience,
            space_id=space_id,
            subject=subject,
            space_claim=settings.auth.space_claim,
            ttl_seconds=ttl_seconds,
            scopes=scopes,
        )
    )


@click.command("dev-issuer")
@click.option("--host", default=None, help="Address to bind [default: the host of auth.jwks_url].")
@click.option(
    "--port", type=int, default=None, help="Port to bind [default: the port of auth.jwks_url]."
)
@click.pass_context
def dev_issuer_command(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the development issuer's JWKS at auth.jwks_url (foreground; Ctrl-C stops it)."""
    settings = _settings(ctx)
    try:
        devauth.refuse_in_production(settings)
    except devauth.DevAuthRefused as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(
        f"dev issuer: JWKS at {settings.auth.jwks_url}, issuer {settings.auth.issuer}", err=True
    )
    devauth.serve_dev_issuer(settings, host=host, port=port)
