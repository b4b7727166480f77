"""Signals: the ingress schema (docs/signals.md) — what is accepted, and how rejections read."""

import json
import typing
import uuid

import pytest

from commands import signals as sig
from commands import telephony
from commands.signals import SignalRejected, parse_signal
from domain import calls as domain_calls
from infra.settings import REPO_ROOT

pytestmark = pytest.mark.unit

CALL = str(uuid.uuid4())
BASE = {
    "signal_id": "sig-1",
    "space_id": "space-a",
    "call_id": CALL,
    "at": "2026-01-31T12:00:00.123Z",
    "source": "worker",
    "schema_version": 1,
}
EXAMPLES = {
    "call.initiated": {
        "agent_id": str(uuid.uuid4()),
        "agent_config_version": 2,
        "direction": "inbound",
        "channel": "twilio_sip",
        "from_number": "+15550001",
        "to_number": "+15550002",
        "room_name": "call-room",
    },
    "call.started": {},
    "call.transcript": {
        "turn_id": "t1",
        "speaker": "user",
        "text": "Hello",
        "start_ms": 0,
        "end_ms": 900,
    },
    "call.tool_invoked": {
        "turn_id": "t1",
        "name": "lookup_order",
        "arguments": {"id": "42"},
        "result": {"status": "shipped"},
        "status": "ok",
        "latency_ms": 230,
    },
    "call.dtmf": {"digit": "#", "offset_ms": 4200},
    "call.transfer_requested": {"mode": "warm", "target": "+15559999"},
    "call.transfer_completed": {"outcome": "completed", "succeeded": True, "reason": None},
    "call.provider_status": {
        "provider": "twilio",
        "provider_call_id": "CA123",
        "status": "busy",
        "answered_by": None,
        "sip_code": 486,
        "reason": "Busy Here",
    },
    "call.usage": {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "kind": "llm_input_tokens",
        "quantity": 512,
    },
    "call.turn_metrics": {
        "turn_id": "t1",
        "end_of_speech_to_first_audio_ms": 800,
        "stt_final_ms": 150,
        "llm_first_token_ms": 300,
        "tts_first_byte_ms": 120,
    },
    "call.ended": {"reason": "hangup", "duration_ms": 61000},
}


def raw(signal_type, /, **fields):
    return json.dumps({**BASE, "type": signal_type, **EXAMPLES[signal_type], **fields}).encode()


def rejected(data) -> SignalRejected:
    with pytest.raises(SignalRejected) as info:
        parse_signal(data)
    return info.value


@pytest.mark.parametrize("kind", sig.SIGNAL_TYPES)
def test_every_signal_kind_parses_into_its_model(kind):
    signal = parse_signal(raw(kind))
    assert signal.type == kind and str(signal.call_id) == CALL
    assert signal.at == "2026-01-31T12:00:00.123Z"
    assert parse_signal(sig.encode_signal(signal)) == signal  # the wire form round-trips


def test_at_is_normalised_to_utc_with_milliseconds():
    signal = parse_signal(raw("call.started", at="2026-01-31T13:00:00.5+01:00"))
    assert signal.at == "2026-01-31T12:00:00.500Z"


@pytest.mark.parametrize("at", ["2026-01-31T12:00:00", "yesterday", 1700000000, None])
def test_at_without_offset_or_not_a_date_is_invalid(at):
    error = rejected(raw("call.started", at=at))
    assert error.code == "invalid_signal" and "at" in error.message


@pytest.mark.parametrize("digit", domain_calls.DTMF_DIGITS)
def test_every_keypad_digit_is_a_valid_dtmf_signal(digit):
    signal = parse_signal(raw("call.dtmf", digit=digit, offset_ms=0))
    assert (signal.digit, signal.offset_ms) == (digit, 0)


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    assert parse_signal(raw("call.started", new_optional_field="x")).type == "call.started"


@pytest.mark.parametrize(
    "data,code",
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (None, "malformed_json"),
        (b"[1, 2]", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (json.dumps({**BASE, "type": "call.exploded"}).encode(), "unknown_signal_type"),
        (json.dumps(BASE).encode(), "invalid_signal"),
    ],
    ids=["not-json", "empty", "none", "array", "not-utf8", "unknown-type", "no-type"],
)
def test_unusable_messages_are_rejected_with_a_stable_code(data, code):
    assert rejected(data).code == code


@pytest.mark.parametrize(
    "kind,fields,where",
    [
        ("call.started", {"signal_id": ""}, "signal_id"),
        ("call.started", {"call_id": "not-a-uuid"}, "call_id"),
        ("call.started", {"source": "telepathy"}, "source"),
        ("call.started", {"schema_version": 2}, "schema_version"),
        ("call.transcript", {"speaker": "narrator"}, "speaker"),
        ("call.transcript", {"start_ms": -1}, "start_ms"),
        ("call.usage", {"kind": "minutes"}, "kind"),
        ("call.usage", {"quantity": -3}, "quantity"),
        ("call.initiated", {"channel": "pigeon"}, "channel"),
        ("call.ended", {"duration_ms": None}, "duration_ms"),
        ("call.dtmf", {"digit": "E"}, "digit"),
        ("call.dtmf", {"digit": "12"}, "digit"),
        ("call.dtmf", {"digit": 1}, "digit"),
        ("call.dtmf", {"offset_ms": -1}, "offset_ms"),
    ],
)
def test_invalid_fields_are_named_in_the_rejection(kind, fields, where):
    error = rejected(raw(kind, **fields))
    assert error.code == "invalid_signal"
    assert error.message.startswith(where) or f"; {where}" in error.message, error.message


@pytest.mark.parametrize(
    "alias,allowed",
    [
        (sig.Direction, domain_calls.DIRECTIONS),
        (sig.Channel, domain_calls.CHANNELS),
        (sig.Speaker, domain_calls.SPEAKERS),
        (sig.ToolStatus, domain_calls.TOOL_STATUSES),
        (sig.TransferMode, domain_calls.TRANSFER_MODES),
        (sig.DtmfDigit, domain_calls.DTMF_DIGITS),
        (sig.UsageKind, domain_calls.USAGE_KINDS),
        (sig.ProviderCallStatus, typing.get_args(telephony.ProviderCallStatus)),
        (sig.AnsweredBy, typing.get_args(telephony.AnsweredBy)),
        (sig.ProviderName, typing.get_args(telephony.ProviderName)),
        (sig.TransferOutcome, domain_calls.TRANSFER_OUTCOMES),
    ],
)
def test_signal_enumerations_match_the_aggregate(alias, allowed):
    assert set(typing.get_args(alias)) == set(allowed)


def test_docs_describe_every_signal_and_its_fields():
    doc = (REPO_ROOT / "docs" / "signals.md").read_text()
    for kind in sig.SIGNAL_TYPES:
        assert f"### {kind}" in doc, kind
        section = doc.split(f"### {kind}", 1)[1].split("\n### ", 1)[0]
        for name in EXAMPLES[kind]:
            assert f"`{name}`" in section, (kind, name)
    for name in BASE:
        assert f"`{name}`" in doc, name


@pytest.mark.parametrize(
    "fields,outcome,succeeded",
    [
        ({"succeeded": True, "outcome": None}, "completed", True),
        ({"succeeded": False, "outcome": None}, "failed", False),
        ({"succeeded": None, "outcome": "busy"}, "busy", False),
        ({"succeeded": None, "outcome": "completed"}, "completed", True),
    ],
)
def test_transfer_outcome_and_succeeded_are_derived_from_each_other(fields, outcome, succeeded):
    payload = {k: v for k, v in fields.items() if v is not None}
    data = {**BASE, "type": "call.transfer_completed", **payload}
    signal = parse_signal(json.dumps(data).encode())
    assert (signal.outcome, signal.succeeded) == (outcome, succeeded)


@pytest.mark.parametrize(
    "fields",
    [{}, {"succeeded": True, "outcome": "busy"}, {"outcome": "vanished"}],
    ids=["neither", "disagree", "unknown-outcome"],
)
def test_transfer_completed_needs_a_consistent_outcome(fields):
    error = rejected(json.dumps({**BASE, "type": "call.transfer_completed", **fields}).encode())
    assert error.code == "invalid_signal"


@pytest.mark.parametrize(
    "fields,where",
    [
        ({"status": "exploded"}, "status"),
        ({"provider": "pigeon"}, "provider"),
        ({"provider_call_id": ""}, "provider_call_id"),
        ({"provider_call_id": "x" * 129}, "provider_call_id"),
        ({"answered_by": "robot"}, "answered_by"),
        ({"sip_code": 99}, "sip_code"),
    ],
)
def test_provider_status_fields_are_checked(fields, where):
    error = rejected(raw("call.provider_status", **fields))
    assert error.code == "invalid_signal" and where in error.message, error.message


def test_call_variables_are_bounded_like_the_pre_call_hooks():
    ok = parse_signal(raw("call.initiated", variables={"customer.tier": "gold"}))
    assert ok.variables == {"customer.tier": "gold"}
    assert parse_signal(raw("call.initiated")).variables is None
    for bad in ({"1bad": "x"}, {"name": 3}, {"name": "x" * 4097},
                {f"v{i}": "x" for i in range(101)}):  # fmt: skip
        assert rejected(raw("call.initiated", variables=bad)).code == "invalid_signal", bad
