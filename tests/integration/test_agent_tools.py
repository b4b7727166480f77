"""HTTP tools and the pre/post-call hooks against local servers, through the real guarded client.

No stack needed: each test starts its own aiohttp server on a random loopback port. Loopback is
a refused target, so tests that reach a server use a policy that allows 127.0.0.1/32; the SSRF
tests use a production-like policy (no allowed networks) and check nothing arrived.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from livekit.agents import RunContext, ToolError, llm
from livekit.agents.llm.utils import prepare_function_arguments
from standardwebhooks.webhooks import Webhook

from adapters.net.guard import TargetPolicy
from agent.callbacks import post_call, pre_call
from agent.tools import (
    MAX_RESPONSE_BYTES,
    GuardedHttpClient,
    HttpTool,
    ToolInvocation,
    ToolOutcome,
    function_tools,
)
from commands.webhooks import new_secret
from domain.agent_config import ToolConfig
from tests.support.dns import FixedResolver

pytestmark = pytest.mark.integration

LOOPBACK_ALLOWED = TargetPolicy.from_strings(allow_http=True, networks=["127.0.0.1/32"])
PRODUCTION_LIKE = TargetPolicy(allow_http=True)  # no allowed networks
VARIABLES = {"tenant": "acme", "api_key": "sk-live-123", "customer": {"id": "C-42"}}


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


Reply = Callable[[Server, web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def server(reply: Reply) -> AsyncIterator[Server]:
    """A server on 127.0.0.1 that records each request, then answers with ``reply``."""
    state = Server()

    async def handle(request: web.Request) -> web.StreamResponse:
        state.requests.append(
            Seen(
                method=request.method,
                path=request.path,
                query=list(request.query.items()),
                headers={name.lower(): value for name, value in request.headers.items()},
                body=await request.read(),
            )
        )
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


def answer(status: int = 200, text: str = "", **headers: str) -> Reply:
    async def reply(_: Server, __: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, headers=headers)

    return reply


def answer_json(document: Any, status: int = 200) -> Reply:
    async def reply(_: Server, __: web.Request) -> web.StreamResponse:
        return web.json_response(document, status=status)

    return reply


async def stall(state: Server, _: web.Request) -> web.StreamResponse:
    await asyncio.wait_for(state.release.wait(), timeout=10)
    return web.Response(text="too late")


class FakeRunContext(RunContext):
    """What the framework hands a tool: here only the function call and the speech matter."""

    def __init__(self, call_id: str, speech_id: str) -> None:
        self._function_call = llm.FunctionCall(call_id=call_id, name="tool", arguments="{}")
        self._speech_handle = SimpleNamespace(id=speech_id)  # type: ignore[assignment]


def tool_config(url: str, **fields: Any) -> ToolConfig:
    return ToolConfig.model_validate(
        {"name": "lookup_order", "description": "Look up an order", "url": url, **fields}
    )


def invoke(
    reply: Reply,
    arguments: dict[str, Any],
    *,
    path: str = "/orders",
    policy: TargetPolicy = LOOPBACK_ALLOWED,
    url: Callable[[Server], str] | None = None,
    resolver: AbstractResolver | None = None,
    **fields: Any,
) -> tuple[ToolOutcome, Server]:
    """Start a server, invoke one tool against it with a fresh client, return what both saw."""

    async def run() -> tuple[ToolOutcome, Server]:
        async with server(reply) as state, GuardedHttpClient(policy, resolver=resolver) as client:
            target = url(state) if url is not None else state.url(path)
            tool = HttpTool(tool_config(target, **fields), VARIABLES, client)
            return await tool.invoke(arguments), state

    return asyncio.run(run())


# --- tools -----------------------------------------------------------------------------------


def test_a_post_tool_fills_variables_into_url_and_headers_and_sends_json_arguments() -> None:
    outcome, state = invoke(
        answer_json({"status": "shipped"}),
        {"order_id": "A-1001", "quantity": 2},
        path="/{{tenant}}/orders/{{customer.id}}",
        headers={"Authorization": "Bearer {{api_key}}", "X-Tenant": "{{tenant}}"},
    )

    assert outcome.error is None and outcome.status == "ok" and outcome.status_code == 200
    assert outcome.result == {"status": "shipped"}
    assert json.loads(outcome.body) == {"status": "shipped"}
    assert outcome.latency_ms >= 0
    [seen] = state.requests
    assert (seen.method, seen.path, seen.query) == ("POST", "/acme/orders/C-42", [])
    assert seen.headers["authorization"] == "Bearer sk-live-123"
    assert seen.headers["x-tenant"] == "acme"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"order_id": "A-1001", "quantity": 2}


def test_a_get_tool_sends_arguments_as_query_parameters() -> None:
    outcome, state = invoke(
        answer(200, "in stock"),
        {"sku": "S 1", "count": 3, "gift": True, "colors": ["red", "blue"]},
        path="/stock?source={{tenant}}",
        method="GET",
    )

    assert outcome.error is None and outcome.result == "in stock"
    [seen] = state.requests
    assert (seen.method, seen.body) == ("GET", b"")
    assert seen.query == [
        ("source", "acme"),
        ("sku", "S 1"),
        ("count", "3"),
        ("gift", "true"),
        ("colors", "red"),
        ("colors", "blue"),
    ]


def test_a_delete_tool_sends_arguments_as_query_parameters() -> None:
    _, state = invoke(answer(204), {"order_id": "A-1"}, method="DELETE")

    [seen] = state.requests
    assert (seen.method, seen.query, seen.body) == ("DELETE", [("order_id", "A-1")], b"")


def test_a_slow_tool_times_out_within_its_timeout() -> None:
    outcome, _ = invoke(stall, {}, timeout_seconds=0.5)

    assert (outcome.error, outcome.status, outcome.status_code) == ("timeout", "timeout", None)
    assert 400 <= outcome.latency_ms < 3000


def test_a_5xx_is_an_error_that_keeps_the_start_of_the_body() -> None:
    outcome, _ = invoke(answer(500, "database down"), {})

    assert outcome.status == "error" and outcome.status_code == 500
    assert outcome.error == "http_status: HTTP 500: database down"


def test_redirects_are_not_followed() -> None:
    outcome, state = invoke(answer(302, Location="http://10.0.0.5/"), {})

    assert outcome.status_code == 302 and outcome.error == "http_status: HTTP 302"
    assert len(state.requests) == 1


def test_only_the_first_16_kib_of_a_response_are_read() -> None:
    outcome, _ = invoke(answer(200, "a" * 1_000_000), {})

    assert outcome.error is None and outcome.truncated
    assert outcome.body == "a" * MAX_RESPONSE_BYTES


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(lambda s: s.url("/orders"), id="loopback literal"),
        pytest.param(lambda s: "http://10.0.0.5/orders", id="private"),
        pytest.param(lambda s: "http://169.254.169.254/latest/meta-data/", id="metadata"),
        pytest.param(lambda s: "http://[::ffff:127.0.0.1]:1/", id="ipv4-mapped loopback"),
        pytest.param(lambda s: s.url("/orders", host="localhost"), id="localhost"),
        pytest.param(
            lambda s: s.url("/orders", host="orders.example.com"), id="name resolving to 127.0.0.1"
        ),
    ],
)
def test_internal_targets_are_refused_and_never_reached(target: Callable[[Server], str]) -> None:
    outcome, state = invoke(
        answer(200, "secret"),
        {},
        policy=PRODUCTION_LIKE,
        url=target,
        resolver=FixedResolver("orders.example.com", "127.0.0.1"),
    )

    assert outcome.status == "refused" and outcome.error is not None
    assert outcome.error.startswith("target_refused: ")
    assert outcome.status_code is None
    assert state.requests == []


def test_metadata_stays_refused_even_when_its_network_is_allowed() -> None:
    policy = TargetPolicy.from_strings(allow_http=True, networks=["169.254.0.0/16"])

    outcome, _ = invoke(answer(), {}, policy=policy, url=lambda s: "http://169.254.169.254/")

    assert outcome.status == "refused"


# --- function tools through LiveKit's calling convention ------------------------------------


def call_function_tool(
    reply: Reply, arguments: dict[str, Any], **fields: Any
) -> tuple[str | ToolError, list[ToolInvocation], Server]:
    """Build the tools for one call, then call one the way the framework's executor does."""
    invocations: list[ToolInvocation] = []

    async def run() -> tuple[str | ToolError, Server]:
        async with server(reply) as state, GuardedHttpClient(LOOPBACK_ALLOWED) as client:
            config = tool_config(state.url("/orders/{{customer.id}}"), **fields)
            [tool] = function_tools([config], VARIABLES, client, invocations.append)
            assert isinstance(tool, llm.RawFunctionTool)
            args, kwargs = prepare_function_arguments(
                fnc=tool,
                json_arguments=json.dumps(arguments),
                call_ctx=FakeRunContext("call_7", "speech_3"),
            )
            try:
                return await tool(*args, **kwargs), state
            except ToolError as exc:
                return exc, state

    output, state = asyncio.run(run())
    return output, invocations, state


def test_a_function_tool_returns_the_body_and_reports_the_invocation() -> None:
    output, invocations, state = call_function_tool(
        answer_json({"status": "shipped"}), {"order_id": "A-1001"}
    )

    assert json.loads(output) == {"status": "shipped"}  # type: ignore[arg-type]
    assert state.requests[0].path == "/orders/C-42"
    [invocation] = invocations
    assert invocation.name == "lookup_order"
    assert invocation.arguments == {"order_id": "A-1001"}
    assert invocation.result == {"status": "shipped"}
    assert (invocation.error, invocation.status, invocation.status_code) == (None, "ok", 200)
    assert (invocation.call_id, invocation.speech_id) == ("call_7", "speech_3")
    assert invocation.latency_ms >= 0


def test_a_failing_function_tool_raises_a_tool_error_the_llm_can_read() -> None:
    output, invocations, _ = call_function_tool(answer(500, "database down"), {})

    assert isinstance(output, ToolError)
    assert output.message == "lookup_order failed: HTTP 500: database down"
    [invocation] = invocations
    assert (invocation.status, invocation.status_code, invocation.result) == ("error", 500, None)
    assert invocation.error == "http_status: HTTP 500: database down"


def test_a_function_tool_with_invalid_arguments_calls_nothing() -> None:
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}},
              "required": ["order_id"]}  # fmt: skip

    output, invocations, state = call_function_tool(answer(), {"id": 1}, parameters=schema)

    assert isinstance(output, ToolError) and "`order_id`" in output.message
    assert invocations[0].status == "error" and invocations[0].status_code is None
    assert state.requests == []


# --- pre-call and post-call hooks -------------------------------------------------------------

PRE_CALL = {
    "call_id": "call_1",
    "agent_id": "agent_1",
    "from_number": "+15550001111",
    "to_number": "+15550002222",
    "channel": "phone",
}


def verified(secret: str) -> Callable[[Server, web.Request], Awaitable[None]]:
    """Check the last request with the reference Standard Webhooks verifier."""

    async def check(state: Server, _: web.Request) -> None:
        seen = state.requests[-1]
        Webhook(secret).verify(seen.body, seen.headers)  # raises if the signature is wrong

    return check


def run_pre_call(reply: Reply, *, policy: TargetPolicy = LOOPBACK_ALLOWED, **kwargs: Any):
    async def run() -> tuple[dict[str, str], Server]:
        async with server(reply) as state, GuardedHttpClient(policy) as client:
            result = await pre_call(state.url("/pre"), PRE_CALL, client, **kwargs)
            return result, state

    return asyncio.run(run())


def test_pre_call_returns_the_hooks_string_variables_signed_with_standard_webhooks() -> None:
    secret = new_secret()
    check = verified(secret)

    async def reply(state: Server, request: web.Request) -> web.StreamResponse:
        await check(state, request)
        document = {"variables": {"customer_name": "Ada", "tier": "gold", "visits": 3}}
        return web.json_response(document)

    variables, state = run_pre_call(reply, secret=secret)

    assert variables == {"customer_name": "Ada", "tier": "gold"}  # 3 is not a string
    [seen] = state.requests
    assert json.loads(seen.body) == PRE_CALL
    assert seen.headers["webhook-id"] == "call_1:pre_call"


def test_pre_call_without_a_secret_is_sent_unsigned() -> None:
    variables, state = run_pre_call(answer_json({"variables": {"a": "b"}}), secret=None)

    assert variables == {"a": "b"}
    assert "webhook-signature" not in state.requests[0].headers


@pytest.mark.parametrize(
    ("reply", "kwargs"),
    [
        pytest.param(answer_json({"variables": {"a": "b"}}, status=500), {}, id="5xx"),
        pytest.param(answer(200, "not json"), {}, id="bad JSON"),
        pytest.param(answer_json({"variables": ["a"]}), {}, id="variables not an object"),
        pytest.param(answer_json(["a"]), {}, id="not an object"),
        pytest.param(answer(204), {}, id="no content"),
        pytest.param(stall, {"timeout": 0.3}, id="timeout"),
        pytest.param(answer_json({"variables": {"a": "b"}}), {"policy": PRODUCTION_LIKE},
                     id="refused target"),
        pytest.param(answer_json({"variables": {"a": "b"}}), {"secret": "not-a-secret"},
                     id="malformed secret"),
    ],
)  # fmt: skip
def test_pre_call_failures_give_no_variables(reply: Reply, kwargs: dict[str, Any]) -> None:
    variables, _ = run_pre_call(reply, **{"secret": None, **kwargs})

    assert variables == {}


def test_pre_call_failures_are_logged_without_secrets_path_or_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = new_secret()

    async def run() -> dict[str, str]:
        async with server(answer(500)) as state, GuardedHttpClient(LOOPBACK_ALLOWED) as client:
            url = state.url("/hooks/pre?token=tok-123")
            return await pre_call(url, PRE_CALL, client, secret)

    with caplog.at_level("DEBUG", logger="agent"):
        assert asyncio.run(run()) == {}

    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("agent."))
    assert "pre-call webhook to http://127.0.0.1:" in ours and "HTTP 500" in ours
    for leaked in (secret, "tok-123", "/hooks/pre"):
        assert leaked not in ours


def test_pre_call_drops_variables_beyond_its_bounds() -> None:
    document = {"variables": {"ok": "x", "bad name": "x", "long": "x" * 5000}}

    variables, _ = run_pre_call(answer_json(document), secret=None)

    assert variables == {"ok": "x"}


POST_CALL = {
    "call_id": "call_2",
    "agent_id": "agent_1",
    "started_at": "2026-01-31T12:00:00.000Z",
    "ended_at": "2026-01-31T12:01:00.000Z",
    "duration_seconds": 60,
    "end_reason": "caller_hung_up",
    "transcript": [{"speaker": "agent", "text": "Hello"}],
    "tool_calls": [{"name": "lookup_order", "status": "ok"}],
}


def run_post_call(statuses: list[int], secret: str | None) -> tuple[bool, Server]:
    """A hook answering ``statuses`` in turn (then 200), each request's signature checked."""
    check = verified(secret) if secret else None

    async def reply(state: Server, request: web.Request) -> web.StreamResponse:
        if check is not None:
            await check(state, request)
        index = len(state.requests) - 1
        return web.Response(status=statuses[index] if index < len(statuses) else 200)

    async def run() -> tuple[bool, Server]:
        async with server(reply) as state, GuardedHttpClient(LOOPBACK_ALLOWED) as client:
            delivered = await post_call(
                state.url("/post"), POST_CALL, client, secret, retry_delays=(0.01, 0.01)
            )
            return delivered, state

    return asyncio.run(run())


def test_post_call_retries_then_succeeds_with_the_same_webhook_id() -> None:
    delivered, state = run_post_call([503, 502], secret=new_secret())

    assert delivered
    assert len(state.requests) == 3
    assert {seen.headers["webhook-id"] for seen in state.requests} == {"call_2:post_call"}
    assert json.loads(state.requests[-1].body) == POST_CALL


def test_post_call_gives_up_after_three_attempts() -> None:
    delivered, state = run_post_call([500, 500, 500, 500], secret=None)

    assert not delivered and len(state.requests) == 3


def test_post_call_does_not_retry_a_client_error() -> None:
    delivered, state = run_post_call([400], secret=None)

    assert not delivered and len(state.requests) == 1


def test_post_call_to_a_refused_target_is_not_sent() -> None:
    async def run() -> bool:
        async with GuardedHttpClient(PRODUCTION_LIKE) as client:
            return await post_call("http://10.0.0.5/post", POST_CALL, client, None)

    assert asyncio.run(run()) is False
