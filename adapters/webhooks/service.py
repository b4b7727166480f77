"""Assembles the webhook delivery worker from settings (``voxagent webhooks send``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta
from typing import Any

from adapters.net.guard import TargetPolicy
from adapters.services import Services
from adapters.webhooks.http import WebhookClient
from adapters.webhooks.queue import Failing
from adapters.webhooks.sender import Sender
from commands.agents import Actor
from commands.webhooks import DisableEndpoint
from domain.delivery import RetryPolicy

log = logging.getLogger(__name__)
SYSTEM_SUBJECT = "system:webhook-delivery"


def target_policy(settings: Any) -> TargetPolicy:
    """http only outside production; private networks only those the operator allowed."""
    return TargetPolicy.from_strings(
        settings.environment != "production", settings.webhooks.allowed_networks
    )


def retry_policy(settings: Any) -> RetryPolicy:
    conf = settings.webhooks
    return RetryPolicy(
        schedule=tuple(conf.retry_schedule),
        jitter=conf.jitter,
        disable_after=timedelta(hours=conf.disable_after_hours),
    )


def build_sender(container: Services, **overrides: Any) -> Sender:
    settings = container.settings
    conf = settings.webhooks
    container.webhooks  # its recorder creates webhook_secrets, which claims read  # noqa: B018
    client = overrides.pop("client", None) or WebhookClient(
        target_policy(settings),
        timeout_seconds=conf.timeout_seconds,
        max_response_bytes=conf.max_response_bytes,
        max_connections=conf.max_in_flight,
    )

    async def disable(failing: Failing) -> None:
        hours = conf.disable_after_hours
        cmd = DisableEndpoint(
            endpoint_id=failing.endpoint_id,
            reason=f"every delivery attempt failed for {hours:g} hours",
            failing_since=failing.failing_since,
        )
        actor = Actor(space_id=failing.space_id, subject=SYSTEM_SUBJECT)
        await asyncio.to_thread(container.webhooks.disable_endpoint, actor, cmd)
        log.warning("disabled webhook endpoint %s: failing since %s",
                    failing.endpoint_id, failing.failing_since)  # fmt: skip

    return Sender(
        container.pool, client, conf, retry_policy(settings), disable,
        listen_conninfo=settings.postgres.conninfo(), **overrides,
    )  # fmt: skip


def run_sender(container: Services) -> None:
    """Run until SIGINT/SIGTERM; in-flight deliveries finish and are recorded first."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sender = build_sender(container)
        log.info("webhook sender running")
        try:
            await sender.run(stop)
        finally:
            await sender.client.close()

    try:
        asyncio.run(main())
    finally:
        container.close()
