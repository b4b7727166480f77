"""``voxagent webhooks dispatch|send``: the two processes of outbound webhooks."""

from __future__ import annotations

import click

from infra.process import settings_for, setup_logging, stop_event


@click.group("webhooks")
def webhooks() -> None:
    """Outbound webhooks: enqueue deliveries from the event stream, and send them."""


@webhooks.command()
@click.pass_context
def dispatch(ctx: click.Context) -> None:
    """Domain topics -> endpoint read model + one queued delivery per subscribed endpoint."""
    from adapters.kafka.topics import domain_topics, ensure_topics_when_ready
    from adapters.webhooks.dispatch import run_dispatcher
    from infra.bootstrap import bootstrap

    settings = settings_for(ctx, "webhooks-dispatch")
    setup_logging(settings)
    if not ensure_topics_when_ready(settings, domain_topics(settings), stop_event()):
        return
    run_dispatcher(bootstrap(settings))


@webhooks.command()
@click.pass_context
def send(ctx: click.Context) -> None:
    """Deliver queued webhooks (signed, retried, recorded) until SIGINT/SIGTERM."""
    from adapters.webhooks.service import run_sender
    from infra.bootstrap import bootstrap

    settings = settings_for(ctx, "webhooks-send")
    setup_logging(settings)
    run_sender(bootstrap(settings))
