"""``voxagent worker``: the voice agent worker (LiveKit Agents)."""

from __future__ import annotations

import click

from infra.settings import Settings


@click.command("worker")
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Take calls dispatched by LiveKit and run their agents until SIGINT/SIGTERM."""
    from agent.worker import run_worker
    from infra.bootstrap import bootstrap
    from infra.cli import _logging

    settings: Settings = ctx.ensure_object(Settings)
    _logging(settings)
    run_worker(bootstrap(settings))
