"""``voxagent bridge``: the media bridge (Twilio Media Streams, VoxImplant <-> LiveKit)."""

from __future__ import annotations

import click

from infra.settings import Settings


@click.command("bridge")
@click.pass_context
def bridge(ctx: click.Context) -> None:
    """Bridge providers' media streams into calls' LiveKit rooms until SIGINT/SIGTERM."""
    from bridge.server import run_bridge
    from infra.cli import _logging

    settings: Settings = ctx.ensure_object(Settings)
    _logging(settings)
    run_bridge(settings)
