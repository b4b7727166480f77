"""``voxagent stack up | down | status``: the local stack from the command line."""

from __future__ import annotations

import sys
import time

import click
from pydantic import ValidationError

from infra.settings import Settings
from infra.stack import manager
from infra.stack.common import StackError
from infra.stack.manager import SERVICES

_SERVICE = click.option(
    "--service",
    "-s",
    "services",
    multiple=True,
    type=click.Choice(list(SERVICES)),
    help="Act on this service only (repeatable). Default: all.",
)


def _echo(line: str) -> None:
    click.echo(line)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        click.echo(f"invalid VOXAGENT_* settings:\n{exc}", err=True)
        sys.exit(1)


@click.group(name="stack")
def stack() -> None:
    """Local PostgreSQL, ClickHouse, Kafka and LiveKit on 127.0.0.1, state under .stack/."""


@stack.command()
@_SERVICE
def up(services: tuple[str, ...]) -> None:
    """Install, start and wait for the services (idempotent)."""
    began = time.monotonic()
    try:
        manager.up(_settings(), _echo, services or None)
    except (StackError, OSError) as exc:
        click.echo(f"stack up failed:\n{exc}", err=True)
        sys.exit(1)
    what = ", ".join(services) if services else "stack"
    click.echo(f"{what} up ({time.monotonic() - began:.1f}s)")


@stack.command()
@_SERVICE
def down(services: tuple[str, ...]) -> None:
    """Stop the services that `up` started; their data stays."""
    try:
        manager.down(_settings(), _echo, services or None)
    except (StackError, OSError) as exc:
        click.echo(f"stack down failed:\n{exc}", err=True)
        sys.exit(1)
    click.echo(f"{', '.join(services) if services else 'stack'} down (data kept)")


@stack.command()
@_SERVICE
def status(services: tuple[str, ...]) -> None:
    """Print a table of the services; exit 1 unless all of them answer."""
    rows = manager.status(_settings(), services or None)
    click.echo(f"{'SERVICE':<12}{'PORT':>7}{'PID':>9}  {'ANSWERING':<10}DETAIL")
    for row in rows:
        pid = str(row.pid) if row.pid is not None else "-"
        answering = "yes" if row.answering else "no"
        click.echo(f"{row.name:<12}{row.port:>7}{pid:>9}  {answering:<10}{row.detail}")
    sys.exit(0 if all(r.answering for r in rows) else 1)


if __name__ == "__main__":
    stack()
