"""``voxagent worker``: a LiveKit Agents worker that takes the calls dispatched to
``settings.livekit.agent_name``.

Calls run as threads of this one process (each with its own event loop), sharing what is
expensive: the Whisper model and Silero VAD (the provider registry caches them), the Kafka
producer for signals, the event store connection. The worker reports its load as its share of
``worker.max_calls`` instead of the machine's CPU, so a busy neighbour (a benchmark, a build)
does not make it refuse calls.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

from livekit.agents import AgentServer, JobContext, JobExecutorType

from adapters.services import Services
from agent.call import CallSession
from agent.providers import ProviderRegistry
from agent.signals import Poller, worker_producer
from commands.webhooks import check_secret
from domain.errors import DomainError

log = logging.getLogger(__name__)


@dataclass
class WorkerDeps:
    """What every call of this process shares."""

    container: Services
    settings: Any
    registry: ProviderRegistry
    producer: Any
    worker_topic: str


_DEPS: WorkerDeps | None = None


async def entrypoint(ctx: JobContext) -> None:
    assert _DEPS is not None, "the worker's dependencies are set before it takes jobs"
    call = CallSession(ctx, _DEPS)
    try:
        await call.run()
    except DomainError as exc:  # the agent or its providers cannot run this call
        log.error("call %s cannot run: %s", call.room.call_id, exc)
        await call.fail("error")
    except Exception:
        log.exception("call %s failed", call.room.call_id)
        if call.reason is None:
            await call.fail("error")
    finally:
        await call.close()
        ctx.delete_room()
        ctx.shutdown(call.reason or "ended")


def build_server(settings: Any) -> AgentServer:
    lk, conf = settings.livekit, settings.worker
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD, ws_url=lk.url, api_key=lk.api_key,
        api_secret=lk.api_secret.get_secret_value(), num_idle_processes=conf.idle_slots,
        load_fnc=lambda srv: len(srv.active_jobs) / max(conf.max_calls, 1),
        load_threshold=1.0, port=0, host="127.0.0.1",
    )  # fmt: skip
    server.rtc_session(entrypoint, agent_name=lk.agent_name)
    return server


def run_worker(container: Services) -> None:
    """Run until SIGINT/SIGTERM; calls in progress are drained first."""
    global _DEPS
    settings = container.settings
    secret = settings.worker.callback_secret
    if secret is not None:
        try:
            check_secret(secret.get_secret_value())
        except ValueError as exc:  # the message never repeats the secret
            raise SystemExit(f"VOXAGENT_WORKER__CALLBACK_SECRET is malformed: {exc}") from None
    registry = ProviderRegistry(settings.providers)
    registry.vad()  # load the shared models before the first call waits for them
    producer = worker_producer(settings)
    poller = Poller(producer)
    poller.start()
    _DEPS = WorkerDeps(container, settings, registry, producer,
                       f"{settings.topic_prefix}.ingress.worker.v1")  # fmt: skip

    async def main() -> None:
        server = build_server(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = asyncio.create_task(server.run())
        await stop.wait()
        log.info("draining the worker's calls")
        await server.drain(timeout=30)
        await server.aclose()
        await running

    try:
        asyncio.run(main())
    finally:
        poller.close()
        container.close()
