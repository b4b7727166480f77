"""HTTP tools without a network: placeholders, argument checks, what the LLM is offered."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from livekit.agents import llm

from adapters.net.guard import TargetPolicy
from agent.tools import (
    GuardedHttpClient,
    HttpResponse,
    HttpTool,
    ToolOutcome,
    function_tools,
    substitute,
)
from domain.agent_config import ToolConfig

pytestmark = pytest.mark.unit

VARIABLES = {
    "customer_id": "C-42",
    "customer": {"name": "Ada", "tier": "gold", "tags": ["vip", "beta"]},
    "flat.key": "flat wins",
}
ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^A-[0-9]+$"},
        "quantity": {"type": "integer", "minimum": 1},
        "address": {
            "type": "object",
            "properties": {"zip": {"type": "string"}},
            "required": ["zip"],
        },
    },
    "required": ["order_id"],
    "additionalProperties": False,
}


class RecordingClient(GuardedHttpClient):
    """Records requests instead of sending them; answers 200 with an empty JSON object."""

    def __init__(self) -> None:
        super().__init__(TargetPolicy())
        self.requests: list[tuple[str, str]] = []
        self.sent: list[tuple[dict[str, str], bytes | None]] = []

    async def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        query: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        timeout_seconds: float = 10.0,
        max_response_bytes: int = 0,
    ) -> HttpResponse:
        self.requests.append((method, url))
        self.sent.append((dict(headers or {}), body))
        return HttpResponse(200, 1, None, b"{}")


def order_tool(client: GuardedHttpClient, **changes: object) -> HttpTool:
    fields: dict[str, object] = {
        "name": "lookup_order",
        "description": "Look up an order",
        "parameters": ORDER_SCHEMA,
        "url": "https://api.example.com/orders",
    }
    return HttpTool(ToolConfig.model_validate({**fields, **changes}), VARIABLES, client)


def test_placeholders_are_filled_from_variables() -> None:
    assert substitute("id={{customer_id}}&t={{ customer_id }}", VARIABLES) == "id=C-42&t=C-42"


def test_dotted_placeholders_walk_nested_mappings_and_lists() -> None:
    text = substitute("{{customer.name}} ({{customer.tier}}, {{customer.tags.1}})", VARIABLES)
    assert text == "Ada (gold, beta)"


def test_a_flat_key_with_a_dot_is_found_before_a_nested_path() -> None:
    assert substitute("{{flat.key}}", VARIABLES) == "flat wins"


def test_unknown_names_become_empty_strings() -> None:
    assert substitute("a{{missing}}b{{customer.missing}}c{{customer_id.x}}", VARIABLES) == "abc"


def test_non_string_values_are_inserted_as_json() -> None:
    assert substitute("{{n}} {{b}} {{o}}", {"n": 3, "b": True, "o": {"k": "v"}}) == (
        '3 true {"k":"v"}'
    )


def test_nothing_is_evaluated_and_inserted_values_are_not_rescanned() -> None:
    variables = {"evil": "{{customer_id}}", "customer_id": "C-42"}
    assert substitute("{{ 1+1 }} {{__import__('os')}} {{evil}}", variables) == (
        "{{ 1+1 }} {{__import__('os')}} {{customer_id}}"
    )


def test_escape_applies_to_inserted_values_only() -> None:
    text = substitute("https://x/{{v}}?q=1", {"v": "a/b?c"}, escape=lambda s: s.upper())
    assert text == "https://x/A/B?C?q=1"


@pytest.mark.parametrize(
    ("arguments", "names"),
    [
        ({}, "`order_id`"),
        ({"order_id": 7}, "`order_id`"),
        ({"order_id": "B-1"}, "`order_id`"),
        ({"order_id": "A-1", "quantity": "three"}, "`quantity`"),
        ({"order_id": "A-1", "quantity": 0}, "`quantity`"),
        ({"order_id": "A-1", "address": {}}, "`address.zip`"),
        ({"order_id": "A-1", "coupon": "X"}, "'coupon'"),
    ],
)
def test_invalid_arguments_name_the_field_and_call_nothing(
    arguments: dict[str, object], names: str
) -> None:
    client = RecordingClient()

    outcome = asyncio.run(order_tool(client).invoke(arguments))

    assert outcome.error is not None and outcome.error.startswith("invalid_arguments: ")
    assert names in outcome.error
    assert outcome.status == "error" and outcome.status_code is None
    assert client.requests == []


def test_valid_arguments_are_sent() -> None:
    client = RecordingClient()

    outcome = asyncio.run(order_tool(client).invoke({"order_id": "A-1", "quantity": 2}))

    assert outcome.error is None and outcome.result == {}
    assert client.requests == [("POST", "https://api.example.com/orders")]


def test_a_tool_whose_schema_is_invalid_is_reported_not_called() -> None:
    client = RecordingClient()
    broken = {"type": "object", "properties": {"n": {"type": "not-a-type"}}}

    outcome = asyncio.run(order_tool(client, parameters=broken).invoke({"n": 1}))

    assert outcome.error is not None and outcome.error.startswith("tool_misconfigured: ")
    assert client.requests == []


def test_a_schema_with_an_unresolvable_ref_is_reported_and_nothing_is_fetched() -> None:
    client = RecordingClient()
    remote = {"type": "object", "properties": {"n": {"$ref": "https://example.com/n.json"}}}

    outcome = asyncio.run(order_tool(client, parameters=remote).invoke({"n": 1}))

    assert outcome.error is not None and outcome.error.startswith("tool_misconfigured: ")
    assert client.requests == []


def test_url_variables_are_percent_encoded_so_they_cannot_change_the_target() -> None:
    client = RecordingClient()
    tool = HttpTool(
        ToolConfig(name="t", description="d", url="https://api.example.com/c/{{id}}", method="GET"),
        {"id": "x@evil.example/#"},
        client,
    )

    asyncio.run(tool.invoke({}))

    assert client.requests == [("GET", "https://api.example.com/c/x%40evil.example%2F%23")]


def test_header_values_cannot_smuggle_another_header() -> None:
    client = RecordingClient()
    tool = HttpTool(
        ToolConfig(name="t", description="d", url="https://api.example.com/",
                   headers={"X-Customer": "{{id}}"}),
        {"id": "C-1\r\nX-Injected: yes"},
        client,
    )  # fmt: skip

    asyncio.run(tool.invoke({}))

    [(headers, _)] = client.sent
    assert headers["X-Customer"] == "C-1X-Injected: yes"


def test_the_llms_arguments_are_sent_as_given_without_placeholders_filled() -> None:
    client = RecordingClient()

    asyncio.run(order_tool(client).invoke({"order_id": "A-1", "address": {"zip": "{{api}}"}}))

    [(_, body)] = client.sent
    assert body is not None and b'"zip": "{{api}}"' in body


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (None, "ok"),
        ("timeout", "timeout"),
        ("target_refused: 10.0.0.5 is a private address", "refused"),
        ("http_status: HTTP 500", "error"),
        ("connect_error: ClientConnectorError", "error"),
    ],
)
def test_outcome_status_matches_the_signal_vocabulary(error: str | None, status: str) -> None:
    assert ToolOutcome(None, "", None, 0, error).status == status


def test_the_llm_is_offered_each_tool_with_its_own_name_description_and_schema() -> None:
    configs = [
        ToolConfig(name="lookup_order", description="Look up an order", parameters=ORDER_SCHEMA,
                   url="https://api.example.com/orders"),
        ToolConfig(name="ping", description="Ping", url="https://api.example.com/ping"),
    ]  # fmt: skip

    tools = function_tools(configs, VARIABLES, RecordingClient(), lambda _: None)
    offered = llm.ToolContext(tools).parse_function_tools("openai")

    assert [t["function"]["name"] for t in offered] == ["lookup_order", "ping"]
    assert offered[0]["function"]["description"] == "Look up an order"
    assert offered[0]["function"]["parameters"] == ORDER_SCHEMA
