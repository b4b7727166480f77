"""``voxagent bridge``: the media bridge (Twilio Media Streams, VoxImplant <-> LiveKit)."""

from __future__ import annotations

import click

from infra.process import settings_for, setup_logging


@click.command("bridge")
@click.pass_context
def bridge(ctx: click.Context) -> None:
    """Bridge providers' media streams into calls' LiveKit rooms until SIGINT/SIGTERM."""
    from bridge.server import run_bridge

    settings = settings_for(ctx, "bridge")
    setup_logging(settings)
    run_bridge(settings)
