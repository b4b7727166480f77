"""``voxagent worker``: the voice agent worker (LiveKit Agents)."""

from __future__ import annotations

import click

from infra.process import settings_for, setup_logging


@click.command("worker")
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Take calls dispatched by LiveKit and run their agents until SIGINT/SIGTERM."""
    from agent.worker import run_worker
    from infra.bootstrap import bootstrap

    settings = settings_for(ctx, "worker")
    setup_logging(settings)
    run_worker(bootstrap(settings))
