"""Numbers and moments our stores can hold (domain/numbers.py): every bounded field of every
command, request and signal takes its bound and refuses what lies just above it, so no accepted
value overflows a column and halts a projector."""

import json
import math
import uuid
from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError

from adapters.api import session_schemas as api
from commands import call_commands as cmd
from commands.signals import SignalRejected, parse_signal
from commands.webhooks import MAX_OVERLAP, RotateSecret
from domain.agent_config import AgentConfig, LlmConfig, ToolConfig
from domain.numbers import (
    MAX_CONFIG_VERSION,
    MAX_MILLIS,
    MAX_QUANTITY,
    MAX_UNIT_PRICE_USD,
    MAX_YEAR,
    MIN_YEAR,
)
from infra.settings import REPO_ROOT
from projections.pricing import MICRO, Price, PricingError, cost_of, parse_document
from tests.unit.test_signals import BASE, EXAMPLES

pytestmark = pytest.mark.unit

CALL = uuid.uuid4()
ABOVE_QUANTITY = math.nextafter(MAX_QUANTITY, math.inf)
UINT64_MAX = 2**64 - 1
NUMERIC_20_6_MAX = Decimal("99999999999999.999999")

# (model, valid fields, bounded field, bound, just above it)
MODELS: list[tuple[type[BaseModel], dict, str, float, float]] = [
    (api.SessionUpdate, {"status": "ended"}, "duration_ms", MAX_MILLIS, MAX_MILLIS + 1),
    (api.SessionEnd, {}, "duration_ms", MAX_MILLIS, MAX_MILLIS + 1),
    (api.TranscriptCreate, {"speaker": "user", "text": "hi"}, "start_ms", MAX_MILLIS, 2**32),
    (api.TranscriptCreate, {"speaker": "user", "text": "hi"}, "end_ms", MAX_MILLIS, 2**32),
    (
        api.UsageEventCreate,
        {"session_id": CALL, "provider": "openai", "model": "m", "kind": "llm_input_tokens"},
        "quantity",
        MAX_QUANTITY,
        ABOVE_QUANTITY,
    ),  # fmt: skip
    (
        cmd.AddTranscript,
        {"call_id": CALL, "turn_id": "t", "speaker": "user", "text": "hi", "end_ms": 0},
        "start_ms",
        MAX_MILLIS,
        MAX_MILLIS + 1,
    ),  # fmt: skip
    (
        cmd.AddTranscript,
        {"call_id": CALL, "turn_id": "t", "speaker": "user", "text": "hi", "start_ms": 0},
        "end_ms",
        MAX_MILLIS,
        MAX_MILLIS + 1,
    ),  # fmt: skip
    (cmd.EndCall, {"call_id": CALL}, "duration_ms", MAX_MILLIS, MAX_MILLIS + 1),
    (
        cmd.RecordUsage,
        {"call_id": CALL, "provider": "openai", "model": "m", "kind": "stt_seconds"},
        "quantity",
        MAX_QUANTITY,
        ABOVE_QUANTITY,
    ),  # fmt: skip
    (LlmConfig, {}, "temperature", 2.0, math.nextafter(2.0, 3.0)),
    (AgentConfig, {"name": "a"}, "max_call_duration_seconds", 14_400, 14_401),
    (AgentConfig, {"name": "a"}, "silence_timeout_seconds", 600, 600.001),
    (
        ToolConfig,
        {"name": "t", "description": "d", "url": "https://example.com/t"},
        "timeout_seconds",
        60,
        60.001,
    ),  # fmt: skip
    (
        RotateSecret,
        {"endpoint_id": CALL},
        "overlap_seconds",
        int(MAX_OVERLAP.total_seconds()),
        int(MAX_OVERLAP.total_seconds()) + 1,
    ),  # fmt: skip
]


def _id(case: tuple) -> str:
    return f"{case[0].__name__}.{case[2]}"


@pytest.mark.parametrize("case", MODELS, ids=[_id(c) for c in MODELS])
def test_every_bounded_field_takes_its_bound_and_refuses_just_above(case) -> None:
    model, fields, field, bound, above = case
    assert getattr(model.model_validate({**fields, field: bound}), field) == bound
    with pytest.raises(ValidationError) as info:
        model.model_validate({**fields, field: above})
    assert info.value.errors()[0]["loc"][-1] == field
    with pytest.raises(ValidationError):  # and over JSON, as the API reads it
        model.model_validate_json(json.dumps({**fields, field: above}, default=str))


FLOATS = [c for c in MODELS if isinstance(c[3], float) or c[2].endswith("seconds")]


@pytest.mark.parametrize("case", FLOATS, ids=[_id(c) for c in FLOATS])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "NaN", 1e300])
def test_typed_floats_refuse_infinity_nan_and_huge_values(case, value) -> None:
    model, fields, field, _, _ = case
    with pytest.raises(ValidationError):
        model.model_validate({**fields, field: value})


def _signal_rejected(kind: str, **fields) -> SignalRejected:
    with pytest.raises(SignalRejected) as info:
        parse_signal(json.dumps({**BASE, "type": kind, **EXAMPLES[kind], **fields}))
    return info.value


def _signal(kind: str, **fields):
    return parse_signal(json.dumps({**BASE, "type": kind, **EXAMPLES[kind], **fields}))


SIGNAL_FIELDS = [
    ("call.initiated", "agent_config_version", MAX_CONFIG_VERSION),
    ("call.transcript", "start_ms", MAX_MILLIS),
    ("call.transcript", "end_ms", MAX_MILLIS),
    ("call.tool_invoked", "latency_ms", MAX_MILLIS),
    ("call.dtmf", "offset_ms", MAX_MILLIS),
    ("call.turn_metrics", "end_of_speech_to_first_audio_ms", MAX_MILLIS),
    ("call.turn_metrics", "stt_final_ms", MAX_MILLIS),
    ("call.turn_metrics", "llm_first_token_ms", MAX_MILLIS),
    ("call.turn_metrics", "tts_first_byte_ms", MAX_MILLIS),
    ("call.ended", "duration_ms", MAX_MILLIS),
]


@pytest.mark.parametrize(("kind", "field", "bound"), SIGNAL_FIELDS)
def test_every_bounded_signal_field_takes_its_bound_and_refuses_just_above(
    kind, field, bound
) -> None:
    assert getattr(_signal(kind, **{field: bound}), field) == bound
    for above in (bound + 1, 2**63, 10**30):
        err = _signal_rejected(kind, **{field: above})
        assert err.code == "invalid_signal"
        assert field in err.message


def test_signal_quantity_takes_its_bound_and_refuses_more_and_non_finite() -> None:
    assert _signal("call.usage", quantity=MAX_QUANTITY).quantity == MAX_QUANTITY
    for above in (ABOVE_QUANTITY, 1e300):
        err = _signal_rejected("call.usage", quantity=above)
        assert (err.code, "quantity" in err.message) == ("invalid_signal", True)
    for raw in ('"inf"', '"NaN"', "Infinity", "NaN", "1e400"):
        body = json.dumps({**BASE, "type": "call.usage", **EXAMPLES["call.usage"]})
        body = body.replace('"quantity": 512', f'"quantity": {raw}')
        with pytest.raises(SignalRejected) as info:
            parse_signal(body)
        assert info.value.code in ("invalid_signal", "malformed_json", "unstorable_text")


@pytest.mark.parametrize(
    "at",
    [
        f"{MIN_YEAR}-01-01T00:00:00.000Z",
        f"{MAX_YEAR}-12-31T23:59:59.999Z",
        f"{MIN_YEAR}-01-01T00:30:00+00:30",  # 2000-01-01T00:00Z
    ],
)
def test_signal_times_in_range_are_taken(at) -> None:
    assert _signal("call.started", at=at).at.startswith(("2000-", "2100-"))


@pytest.mark.parametrize(
    "at",
    [
        f"{MIN_YEAR - 1}-12-31T23:59:59.999Z",
        f"{MAX_YEAR + 1}-01-01T00:00:00.000Z",
        f"{MAX_YEAR}-12-31T23:30:00-01:00",  # 2101 in UTC
        "0001-01-01T00:00:00+01:00",  # before datetime.min in UTC
        "9999-12-31T23:59:59-01:00",  # after datetime.max in UTC
        "1970-01-01T00:00:00Z",
    ],
)
def test_signal_times_out_of_range_are_rejected_with_a_clear_message(at) -> None:
    err = _signal_rejected("call.started", at=at)
    assert err.code == "invalid_signal"
    assert f"must fall in {MIN_YEAR}..{MAX_YEAR}" in err.message
    assert err.message.startswith("at: ")


@pytest.mark.parametrize("model", [cmd.StartCall, cmd.InitiateCall])
def test_call_command_times_are_bounded_too(model) -> None:
    fields = {"call_id": CALL}
    if model is cmd.InitiateCall:
        fields = {"agent_id": CALL, "direction": "web", "channel": "web"}
    assert model.model_validate({**fields, "at": "2100-12-31T23:59:59Z"}).at is not None
    assert model.model_validate({**fields, "at": "2026-01-31T12:00:00"}).at is not None  # UTC
    for at in ("2101-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00"):
        with pytest.raises(ValidationError, match="must fall in 2000..2100"):
            model.model_validate({**fields, "at": at})


def _catalogue(usd: str, per: int = 1) -> list:
    return parse_document(
        {
            "version": "t",
            "prices": [
                {
                    "provider": "p",
                    "kind": "tts_characters",
                    "usd": usd,
                    "per": per,
                    "effective_from": "2025-01-01",
                },
            ],
        }  # fmt: skip
    )


def test_catalogue_unit_prices_are_bounded_so_that_every_cost_fits() -> None:
    assert _catalogue(str(MAX_UNIT_PRICE_USD))[0].unit_price == MAX_UNIT_PRICE_USD
    assert _catalogue("10000", per=1_000_000)  # 0.01 per character
    with pytest.raises(PricingError, match="at most 0.01 USD per character"):
        _catalogue("10000.01", per=1_000_000)
    # the largest cost of one usage record fits one row, and a million of them a call's total
    dearest = Price(MAX_UNIT_PRICE_USD, "x", MAX_UNIT_PRICE_USD, 1)
    one = cost_of(MAX_QUANTITY, dearest)
    assert one <= NUMERIC_20_6_MAX  # PostgreSQL call_usage.cost_usd numeric(20,6)
    assert one * 1_000_000 <= NUMERIC_20_6_MAX  # calls.total_cost_usd, cost_daily.cost_usd
    assert int(one * 1_000_000 / MICRO) <= UINT64_MAX  # ClickHouse total_cost_micros UInt64


def test_the_shipped_catalogue_stays_within_the_bound() -> None:
    doc = json.loads((REPO_ROOT / "infra" / "pricing" / "default.json").read_text())
    assert parse_document(doc)  # raises PricingError when a price is above the bound


def test_docs_state_the_limits() -> None:
    api_md = (REPO_ROOT / "docs" / "api.md").read_text()
    signals_md = (REPO_ROOT / "docs" / "signals.md").read_text()
    for text in (api_md, signals_md):
        assert "4294967295" in text.replace(",", "").replace("_", "")
        assert "1e9" in text or "1,000,000,000" in text
    assert "2147483647" in signals_md.replace(",", "").replace("_", "")
    assert f"{MIN_YEAR}..{MAX_YEAR}" in signals_md
