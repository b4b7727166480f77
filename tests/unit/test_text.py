"""Text our stores can hold (domain/text.py): the rule, its pydantic form, and that every
request, command and signal model follows it."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any

import pytest
from annotated_types import MaxLen
from fastapi.routing import APIRoute
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from adapters.api import agents as api_agents
from adapters.api import costs, health, livekit, sessions, telephony
from adapters.api import webhooks as api_webhooks
from adapters.api.errors import ApiError
from adapters.api.text_guard import url_problems
from adapters.api.twilio_webhooks import _form
from commands import agents, call_commands, signals, webhooks
from commands.signals import SignalRejected, parse_signal
from domain import agent_config
from domain import webhooks as domain_webhooks
from domain.text import (
    MAX_DEPTH,
    Storable,
    check_json_size,
    json_size,
    max_json_bytes,
    scrubbed,
    text_problem,
    value_problem,
)

pytestmark = pytest.mark.unit

# every code point, lone surrogates included (hypothesis leaves them out unless asked)
ANY_CHAR = st.characters(codec=None, categories=None, exclude_categories=())
SPECIAL = st.sampled_from(["\x00", "\ud800", "\udfff", "\ufffd", "\uffff", "\U0010ffff", "\t",
                           "\x7f", "\x1f", "\u2028", "\U0001f600"])  # fmt: skip
TEXT = st.text(alphabet=st.one_of(ANY_CHAR, SPECIAL), max_size=40)


def storable(value: str) -> bool:
    """The oracle: what PostgreSQL and UTF-8 accept, tried the hard way."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain",
        "tab\tnew\nline",
        "\x01\x1f\x7f",
        "\ufffd",
        "\uffff\ufffe",
        "\U0010ffff",
        "\U0001f600 emoji",
        "é" * 10,
    ],
)
def test_every_character_utf8_can_encode_but_nul_is_storable(value):  # fmt: skip
    assert text_problem(value) is None


@pytest.mark.parametrize(("value", "says"), [
    ("a\x00b", "NUL character (U+0000) at index 1"),
    ("ab\ud800", "lone surrogate (U+D800) at index 2"),
    ("\udfff", "lone surrogate (U+DFFF) at index 0"),
])  # fmt: skip
def test_nul_and_lone_surrogates_are_not_storable_and_the_message_says_where(value, says):
    why = text_problem(value)
    assert why is not None and says in why


@given(TEXT)
def test_the_rule_agrees_with_what_utf8_and_postgresql_accept(value):
    assert (text_problem(value) is None) == storable(value)


def test_nested_values_keys_and_numbers_are_checked_with_their_path():
    assert value_problem({"a": [1, "ok", {"b": "x\x00"}]})[1:] == (
        "['a'][2]['b']",
        "holds a NUL character (U+0000) at index 1, which cannot be stored; remove it",
    )
    kind, where, why = value_problem({"ok": {"k\ud800": 1}})
    assert (kind, where) == ("unstorable_text", "['ok']['k\\ud800']") and why.startswith("(a key)")
    assert value_problem([1.5, float("nan")])[2] == "is nan: only finite numbers can be stored"
    assert value_problem({"x": float("-inf")})[0] == "unstorable_text"
    assert value_problem({"a": [1, 2.5, None, True, "é"]}) is None


def test_nesting_is_bounded():
    deep: Any = "x"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert value_problem(deep) is None
    assert value_problem([deep])[0] == "json_too_deep"


class Model(Storable):
    name: str
    data: dict[str, Any] = {}


class Bounded(Storable):
    data: Annotated[dict[str, Any], max_json_bytes(40)] = {}


def test_a_storable_model_refuses_with_a_stable_type_and_the_field():
    with pytest.raises(ValidationError) as caught:
        Model(name="a\x00")
    (error,) = caught.value.errors()
    assert error["type"] == "unstorable_text" and error["loc"] == ("name",)
    with pytest.raises(ValidationError) as caught:
        Model(name="ok", data={"k": ["\ud800"]})
    (error,) = caught.value.errors()
    assert error["type"] == "unstorable_text" and error["loc"] == ("data",)
    assert "['k'][0]" in error["msg"]


def test_free_form_json_has_a_bounded_encoded_size():
    assert json_size({"a": "é"}) == len('{"a":"é"}'.encode())
    assert Bounded(data={"a": "x" * 30}).data == {"a": "x" * 30}
    with pytest.raises(ValidationError) as caught:
        Bounded(data={"a": "x" * 40})
    assert caught.value.errors()[0]["type"] == "json_too_large"
    assert check_json_size([1], 3) == [1]


@given(TEXT)
def test_a_model_accepts_exactly_the_storable_text_and_keeps_it_unchanged(value):
    try:
        model = Model(name=value, data={value: [value]})
    except ValidationError as exc:
        assert not storable(value)
        assert {e["type"] for e in exc.errors()} == {"unstorable_text"}
        return
    assert storable(value)
    assert model.name == value and model.data == {value: [value]}
    assert json.loads(model.model_dump_json()) == {"name": value, "data": {value: [value]}}


@given(st.recursive(st.none() | st.floats() | TEXT, lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(TEXT, kids, max_size=3), max_leaves=10))  # fmt: skip
def test_scrubbed_reports_are_always_storable(value):
    assert value_problem(scrubbed(value)) is None


def test_a_config_outgrowing_its_bound_is_refused_as_a_whole():
    schema = {"type": "object", "properties": {}, "description": "x" * 60_000}
    tools = [{"name": f"t{i}", "description": "d", "url": "https://t.example/x",
              "parameters": schema} for i in range(9)]  # fmt: skip
    with pytest.raises(ValidationError) as caught:
        agent_config.AgentConfig(name="A", tools=tools)
    assert caught.value.errors()[0]["type"] == "json_too_large"
    agent_config.AgentConfig(name="A", tools=tools[:8])


# -- signals ---------------------------------------------------------------------------------
BASE = {"signal_id": "s-1", "space_id": "sp", "call_id": "9b2e4c1a-6f55-4a9e-9a57-3f0d7c1e2b10",
        "at": "2026-01-31T12:00:00.000Z", "source": "worker"}  # fmt: skip


@pytest.mark.parametrize("signal", [
    {**BASE, "type": "call.transcript", "turn_id": "t", "speaker": "user", "text": "a\x00",
     "start_ms": 0, "end_ms": 1},
    {**BASE, "type": "call.ended", "reason": "x\x00", "duration_ms": 1},
    {**BASE, "type": "call.tool_invoked", "name": "t", "status": "ok", "latency_ms": 1,
     "result": {"k\x00": 1}},
    {**BASE, "type": "call.usage", "provider": "p", "model": "m\x00", "kind": "stt_seconds",
     "quantity": 1},
    {**BASE, "space_id": "s\x00", "type": "call.started"},
])  # fmt: skip
def test_a_signal_with_unstorable_text_is_rejected_with_a_stable_code(signal):
    with pytest.raises(SignalRejected) as caught:
        parse_signal(json.dumps(signal))
    assert caught.value.code == "unstorable_text"
    assert "NUL" in caught.value.message


def test_a_signal_with_a_lone_surrogate_or_a_non_finite_number_is_rejected():
    text = {**BASE, "type": "call.transcript", "turn_id": "t", "speaker": "user",
            "text": "a\ud800", "start_ms": 0, "end_ms": 1}  # fmt: skip
    with pytest.raises(SignalRejected):
        parse_signal(json.dumps(text))
    tool = {**BASE, "type": "call.tool_invoked", "name": "t", "status": "ok", "latency_ms": 1,
            "result": [float("nan")]}  # fmt: skip
    with pytest.raises(SignalRejected) as caught:
        parse_signal(json.dumps(tool))
    assert caught.value.code == "unstorable_text"


# -- URLs, headers, forms --------------------------------------------------------------------
def scope(path: bytes, query: bytes = b"", headers: list[tuple[bytes, bytes]] = ()) -> dict:
    return {"type": "http", "path": path.decode("latin-1"), "raw_path": path,
            "query_string": query, "headers": list(headers)}  # fmt: skip


def test_url_problems_name_the_parameter():
    assert url_problems(scope(b"/api/agents", b"name=caf%C3%A9&x=a+b")) == []
    assert [p["loc"] for p in url_problems(scope(b"/a%00", b"n=%00&m=%ff"))] == [
        ["path"], ["query", "n"], ["query", "m"]]  # fmt: skip
    assert url_problems(scope(b"/a", b"", [(b"x-k", b"a\x00")]))[0]["loc"] == ["header", "x-k"]
    assert url_problems(scope(b"/a%ED%A0%80"))[0]["type"] == "invalid_utf8"


def test_twilio_forms_are_utf8_without_nul():
    assert _form(b"From=%2B1555&To=caf%C3%A9") == {"From": "+1555", "To": "café"}
    for body in (b"From=%00", b"From=%FF", b"From=\xff", b"Fr%00m=1"):
        with pytest.raises(ApiError) as caught:
            _form(body)
        assert (caught.value.status, caught.value.code) == (400, "invalid_form")


# -- the whole class: every model that takes text in ------------------------------------------
def _models_of(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_of(arg)]


ROUTERS = (api_agents.router, sessions.router, costs.router, costs.usage_router,
           api_webhooks.router, livekit.router, telephony.router, health.router)  # fmt: skip


def request_models() -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    for route in (route for router in ROUTERS for route in router.routes):
        if isinstance(route, APIRoute):
            for param in route.dependant.body_params:
                found.update(_models_of(param.field_info.annotation))
    return found


def command_models() -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    for module in (agents, call_commands, webhooks, signals, agent_config, domain_webhooks):
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseModel)
                    and value.__module__ == module.__name__):  # fmt: skip
                found.add(value)
    return found


def with_nested(models: set[type[BaseModel]]) -> set[type[BaseModel]]:
    todo, seen = list(models), set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            todo.extend(_models_of(field.annotation))
    return seen


def _is_str(annotation: Any) -> bool:
    return annotation is str or (
        isinstance(annotation, types.UnionType | typing._UnionGenericAlias)  # type: ignore[attr-defined]
        and str in typing.get_args(annotation)
    )


def test_the_sweep_finds_the_models():
    names = {m.__name__ for m in with_nested(request_models() | command_models())}
    assert {
        "AgentCreate",
        "AgentPatch",
        "TranscriptCreate",
        "EndpointPatch",
        "ToolConfig",
        "TokenRequest",
        "StreamRequest",
        "TranscriptSignal",
        "InitiateCall",
    } <= names


def test_every_model_that_takes_text_in_refuses_unstorable_text():
    loose = sorted(m.__qualname__ for m in with_nested(request_models() | command_models())
                   if not issubclass(m, Storable))  # fmt: skip
    assert loose == []


def test_every_string_field_that_takes_text_in_has_a_maximum_length():
    unbounded = []
    for model in with_nested(request_models() | command_models()):
        for name, field in model.model_fields.items():
            if not _is_str(field.annotation):
                continue
            bounded = any(isinstance(m, MaxLen) for m in field.metadata)
            if not (bounded or name in _BOUNDED_BY_VALIDATOR.get(model.__name__, ())):
                unbounded.append(f"{model.__qualname__}.{name}")
    assert sorted(unbounded) == []


# fields whose validator bounds them (URLs: 2048 characters; secrets: 24-64 bytes of base64;
# signal times: parsed as ISO 8601)
_BOUNDED_BY_VALIDATOR = {
    "LlmConfig": ("base_url",), "ToolConfig": ("url",), "WebhooksConfig": ("pre_call_url",
    "post_call_url"), "EndpointSpec": ("url",), "EndpointCreate": ("url",),
    "CreateEndpoint": ("secret",), "RotateSecret": ("secret",), "_WithSecret": ("secret",),
}  # fmt: skip
_SIGNAL_TIME = ("at",)
for _name in ("CallInitiatedSignal", "CallStartedSignal", "TranscriptSignal", "ToolInvokedSignal",
              "DtmfSignal", "TransferRequestedSignal", "TransferCompletedSignal", "UsageSignal",
              "TurnMetricsSignal", "CallEndedSignal", "ProviderStatusSignal",
              "_Signal"):  # fmt: skip
    _BOUNDED_BY_VALIDATOR[_name] = _SIGNAL_TIME


def test_what_the_worker_reports_of_third_parties_is_made_storable_so_ingest_takes_it():
    from tests.unit.test_worker_signals import Captured, emitter

    producer = Captured()
    signals = emitter(producer)
    signals.transcript("t1", "agent", "he said \x00 and \ud83d", 0, 10)
    signals.tool_invoked("t1", "lookup", {"q\x00": "x"}, {"body": ["a\x00", float("nan")]},
                         "err \udc00", "ok", 5)  # fmt: skip
    parsed = [parse_signal(value) for _, value, _ in producer.messages]
    assert parsed[0].text == "he said \ufffd and \ufffd"
    assert parsed[1].arguments == {"q\ufffd": "x"}
    assert parsed[1].result == {"body": ["a\ufffd", None]} and parsed[1].error == "err \ufffd"
