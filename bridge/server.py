"""The media bridge's server: one WebSocket route per provider, ``/health`` and ``/stats``.

Every stream runs in its own task and its failures stay there: an exception in one stream is
logged and counted, the socket closes, the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from adapters.telephony.twiml import STREAM_PATHS
from bridge.protocols import PROTOCOLS
from bridge.session import BridgeContext, StreamSession

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 64 * 1024  # a 20 ms frame is < 1 KiB; nothing legitimate is near this
CONTEXT = web.AppKey("context", BridgeContext)
SESSIONS = web.AppKey("sessions", set)


def build_app(ctx: BridgeContext) -> web.Application:
    app = web.Application()
    app[CONTEXT] = ctx
    app[SESSIONS] = set()
    for channel, path in STREAM_PATHS.items():
        app.router.add_get(path, _stream_handler(channel))
    app.router.add_get("/health", _health)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/stats/reset", _reset)
    app.on_shutdown.append(_close_streams)
    return app


def _stream_handler(channel: str) -> Any:
    protocol = PROTOCOLS[channel]

    async def handle(request: web.Request) -> web.StreamResponse:
        ctx, sessions = request.app[CONTEXT], request.app[SESSIONS]
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30)
        await ws.prepare(request)
        if ctx.metrics.active >= ctx.telephony.max_streams:
            ctx.metrics.counters["refused_bridge_full"] += 1
            await ws.close(code=1013, message=b"bridge_full")  # try again later
            return ws
        ctx.metrics.active += 1
        session = StreamSession(ws, protocol(), ctx)
        sessions.add(session)
        try:
            await session.run()
        except Exception:  # noqa: BLE001 - one broken stream never affects the others
            ctx.metrics.counters["stream_crashed"] += 1
            log.exception("a %s stream failed", channel)
            if not ws.closed:
                await ws.close(code=1011, message=b"internal_error")
        finally:
            ctx.metrics.active -= 1
            sessions.discard(session)
        return ws

    return handle


async def _health(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({"status": "ok", "active_streams": ctx.metrics.active})


async def _stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response({**ctx.metrics.snapshot(), "pacer_resyncs": ctx.pacer.resyncs})


async def _reset(request: web.Request) -> web.Response:
    if request.remote not in ("127.0.0.1", "::1"):
        raise web.HTTPForbidden(text="stats can be reset from the bridge's own machine only")
    request.app[CONTEXT].metrics.reset()
    return web.json_response({"reset": True})


async def _close_streams(app: web.Application) -> None:
    sockets = [s.ws for s in app[SESSIONS] if not s.ws.closed]
    await asyncio.gather(*(ws.close(code=1001, message=b"bridge_shutdown") for ws in sockets),
                         return_exceptions=True)  # fmt: skip
    await app[CONTEXT].pacer.close()


def _not_stream_noise(record: logging.LogRecord) -> bool:
    """The rtc SDK logs every agent data stream nobody here reads (transcriptions, session
    events) at INFO on the root logger: several a second per call, none of our business."""
    return not str(record.msg).startswith(("ignoring byte stream", "ignoring text stream"))


def run_bridge(settings: Any) -> None:
    """Serve until SIGINT/SIGTERM (``voxagent bridge``)."""
    telephony = settings.telephony
    if settings.environment == "production" and "development" in (
        telephony.stream_secret.get_secret_value()
    ):
        raise SystemExit("telephony.stream_secret is the development default; set a secret")
    ctx = BridgeContext(telephony=telephony, livekit=settings.livekit)
    logging.getLogger().addFilter(_not_stream_noise)
    log.info("media bridge on %s:%d (public %s)", telephony.bridge_host,
             telephony.bridge_port, telephony.bridge_public_url)  # fmt: skip
    web.run_app(build_app(ctx), host=telephony.bridge_host, port=telephony.bridge_port,
                print=None, access_log=None)  # fmt: skip
