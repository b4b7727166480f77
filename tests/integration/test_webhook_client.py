"""The webhook client against local receivers: delivery, failures, limits and the SSRF guard.

No stack needed: each test starts its own aiohttp receiver on a random loopback port. Loopback
is a refused target, so tests that deliver use a policy that allows 127.0.0.1/32; the others
show what a production policy (no allowed networks) does to the same receiver.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from adapters.net.guard import TargetPolicy
from adapters.webhooks.http import Outcome, WebhookClient
from adapters.webhooks.signing import signed_headers
from commands.webhooks import new_secret
from tests.support.dns import FixedResolver

pytestmark = pytest.mark.integration

LOOPBACK_ALLOWED = TargetPolicy.from_strings(allow_http=True, networks=["127.0.0.1/32"])
PRODUCTION_LIKE = TargetPolicy(allow_http=True)  # no allowed networks
BODY = json.dumps({"type": "call.ended", "data": {"call_id": "call_1"}}).encode()
HEADERS = signed_headers("msg_1", 1700000000, BODY, [new_secret()])


@dataclass
class Receiver:
    port: int
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


Reply = Callable[[Receiver, web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def receiver(reply: Reply) -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.1 that records each request, then answers with ``reply``."""
    state = Receiver(port=0)

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        state.requests.append((headers, await request.read()))
        return await reply(state, request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


def answer(status: int, text: str = "", **headers: str) -> Reply:
    async def reply(_: Receiver, __: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, headers=headers)

    return reply


async def stall_before_answering(state: Receiver, _: web.Request) -> web.StreamResponse:
    await asyncio.wait_for(state.release.wait(), timeout=10)
    return web.Response(text="too late")


async def stall_mid_body(state: Receiver, request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"partial")
    await asyncio.wait_for(state.release.wait(), timeout=10)
    return response


def post(client: WebhookClient, url: str) -> Outcome:
    async def send() -> Outcome:
        async with client:
            return await client.post(url, BODY, HEADERS)

    return asyncio.run(send())


def deliver(
    reply: Reply,
    policy: TargetPolicy = LOOPBACK_ALLOWED,
    host: str = "127.0.0.1",
    timeout_seconds: float = 5.0,
    max_response_bytes: int = 4096,
    resolver: AbstractResolver | None = None,
) -> tuple[Outcome, Receiver]:
    """Start a receiver, post to it once with a fresh client, return what both saw."""
    client = WebhookClient(
        policy,
        timeout_seconds=timeout_seconds,
        max_response_bytes=max_response_bytes,
        resolver=resolver,
    )

    async def run() -> tuple[Outcome, Receiver]:
        async with receiver(reply) as state, client:
            outcome = await client.post(state.url(host=host), BODY, HEADERS)
            return outcome, state

    return asyncio.run(run())


def test_a_2xx_is_ok_and_the_receiver_gets_our_exact_headers_and_body() -> None:
    outcome, state = deliver(answer(200, "thanks"))

    assert outcome.ok and outcome.status_code == 200 and outcome.error is None
    assert outcome.response_body == "thanks"
    assert outcome.latency_ms >= 0
    [(headers, body)] = state.requests
    assert body == BODY
    for name, value in HEADERS.items():
        assert headers[name] == value


def test_a_5xx_is_a_status_not_an_error() -> None:
    outcome, _ = deliver(answer(500, "boom"))

    assert (outcome.status_code, outcome.error, outcome.ok) == (500, None, False)
    assert outcome.response_body == "boom"


def test_redirects_are_not_followed() -> None:
    outcome, state = deliver(answer(302, Location="/elsewhere"))

    assert (outcome.status_code, outcome.error, outcome.ok) == (302, None, False)
    assert len(state.requests) == 1


def test_a_receiver_that_never_answers_times_out() -> None:
    outcome, _ = deliver(stall_before_answering, timeout_seconds=0.5)

    assert (outcome.status_code, outcome.error, outcome.ok) == (None, "timeout", False)
    assert 400 <= outcome.latency_ms < 5000


def test_a_receiver_that_stalls_mid_body_times_out() -> None:
    outcome, _ = deliver(stall_mid_body, timeout_seconds=0.5)

    assert outcome.error == "timeout" and not outcome.ok
    assert outcome.status_code == 200  # the head arrived; the body never finished


def test_only_the_first_bytes_of_a_large_response_are_kept() -> None:
    outcome, _ = deliver(answer(200, "a" * 1_000_000), max_response_bytes=1000)

    assert outcome.ok
    assert outcome.response_body == "a" * 1000


def test_environment_proxies_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")

    outcome, state = deliver(answer(204))

    assert outcome.ok and len(state.requests) == 1


def test_a_literal_loopback_url_is_refused_without_an_allowed_network() -> None:
    outcome, state = deliver(answer(200), policy=PRODUCTION_LIKE)

    assert outcome.error is not None and outcome.error.startswith("target_refused: ")
    assert "127.0.0.1 is a loopback address" in outcome.error
    assert outcome.status_code is None and state.requests == []


def test_localhost_is_refused_without_an_allowed_network() -> None:
    outcome, state = deliver(answer(200), policy=PRODUCTION_LIKE, host="localhost")

    assert outcome.error == "target_refused: localhost is a loopback host name"
    assert state.requests == []


def test_a_name_whose_dns_points_at_loopback_is_refused_at_connect_time() -> None:
    resolver = FixedResolver("hook.example.test", "127.0.0.1")

    outcome, state = deliver(
        answer(200), policy=PRODUCTION_LIKE, host="hook.example.test", resolver=resolver
    )

    assert outcome.error is not None and outcome.error.startswith("target_refused: ")
    assert "hook.example.test resolves to" in outcome.error and "loopback" in outcome.error
    assert state.requests == []


def test_a_name_resolving_inside_an_allowed_network_is_delivered() -> None:
    resolver = FixedResolver("hook.example.test", "127.0.0.1")

    outcome, state = deliver(answer(200), host="hook.example.test", resolver=resolver)

    assert outcome.ok and len(state.requests) == 1
    assert state.requests[0][0]["host"].startswith("hook.example.test:")


def test_a_closed_port_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    outcome = post(WebhookClient(LOOPBACK_ALLOWED), f"http://127.0.0.1:{port}/hook")

    assert outcome.error is not None and outcome.error.startswith("connect_error: ")
    assert outcome.status_code is None and not outcome.ok


def test_an_unknown_name_is_a_connect_error() -> None:
    resolver = FixedResolver("hook.example.test", "127.0.0.1")

    outcome = post(
        WebhookClient(LOOPBACK_ALLOWED, resolver=resolver), "http://nowhere.example.test/hook"
    )

    assert outcome.error is not None and outcome.error.startswith("connect_error: ")
