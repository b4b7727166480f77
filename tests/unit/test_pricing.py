"""The pricing catalog: effective dates, model vs wildcard, overrides, unknown usage costs 0."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from infra.settings import Settings
from projections.pricing import (
    KINDS,
    UNPRICED,
    Catalog,
    PricingError,
    cost_of,
    load_catalog,
    parse_document,
)

pytestmark = pytest.mark.unit


def doc(version: str, *prices: tuple[str, str, str, str, int, str]) -> dict:
    keys = ("provider", "model", "kind", "usd", "per", "effective_from")
    return {"version": version, "prices": [dict(zip(keys, p, strict=True)) for p in prices]}


BASE = doc(
    "base-1",
    ("openai", "*", "llm_input_tokens", "5.00", 1_000_000, "2024-01-01"),
    ("openai", "gpt-4o", "llm_input_tokens", "5.00", 1_000_000, "2024-01-01"),
    ("openai", "gpt-4o", "llm_input_tokens", "2.50", 1_000_000, "2024-10-01"),
    ("deepgram", "*", "stt_seconds", "0.0043", 60, "2024-01-01"),
)


def catalog(*docs: dict) -> Catalog:
    return Catalog(e for rank, d in enumerate(docs) for e in parse_document(d, rank))


def test_the_newest_entry_effective_at_the_usage_date_wins() -> None:
    cat = catalog(BASE)
    before = cat.price("openai", "gpt-4o", "llm_input_tokens", date(2024, 9, 30))
    after = cat.price("openai", "gpt-4o", "llm_input_tokens", datetime(2024, 10, 1, tzinfo=UTC))
    assert before.unit_price == Decimal("0.000005")
    assert after.unit_price == Decimal("0.0000025")
    assert after.entry_id == "base-1:openai/gpt-4o/llm_input_tokens@2024-10-01"
    assert cat.price("openai", "gpt-4o", "llm_input_tokens", date(2023, 12, 31)).entry_id == (
        UNPRICED
    )


def test_a_model_entry_beats_the_wildcard_which_prices_other_models() -> None:
    cat = catalog(BASE)
    assert cat.price("OpenAI", "GPT-4o", "llm_input_tokens", date(2025, 1, 1)).usd == Decimal(
        "2.50"
    )
    other = cat.price("openai", "o3-mini", "llm_input_tokens", date(2025, 1, 1))
    assert other.entry_id == "base-1:openai/*/llm_input_tokens@2024-01-01"


def test_overrides_win_at_equal_effective_dates_and_add_newer_prices() -> None:
    overrides = doc(
        "acme-2025",
        ("openai", "gpt-4o", "llm_input_tokens", "2.00", 1_000_000, "2024-10-01"),
        ("deepgram", "*", "stt_seconds", "0.30", 3600, "2025-03-01"),
    )
    cat = catalog(BASE, overrides)
    assert cat.price("openai", "gpt-4o", "llm_input_tokens", date(2025, 1, 1)).entry_id == (
        "acme-2025:openai/gpt-4o/llm_input_tokens@2024-10-01"
    )
    assert cat.price("deepgram", "nova-2", "stt_seconds", date(2025, 2, 28)).usd == Decimal(
        "0.0043"
    )
    assert cat.price("deepgram", "nova-2", "stt_seconds", date(2025, 3, 1)).usd == Decimal("0.30")


def test_unknown_usage_costs_nothing_and_never_fails() -> None:
    price = catalog(BASE).price("nobody", "x", "tts_characters", date(2025, 1, 1))
    assert (price.unit_price, price.entry_id, price.cost(12345.6)) == (Decimal(0), UNPRICED, 0)


def test_cost_is_rounded_half_even_to_micro_dollars_and_deterministic() -> None:
    stt = catalog(BASE).price("deepgram", "nova-3", "stt_seconds", date(2025, 1, 1))
    # 61.5 s at 0.0043 USD/min = 0.00440750 -> 0.004408 (exactly, from the float's repr)
    assert stt.cost(61.5) == Decimal("0.004408")
    assert [stt.cost(0.1 + 0.2) for _ in range(3)] == [Decimal("0.000022")] * 3
    llm = catalog(BASE).price("openai", "gpt-4o", "llm_input_tokens", date(2025, 1, 1))
    assert cost_of(1, llm) == Decimal("0.000002")  # 0.0000025 rounds half to even
    assert cost_of(3, llm) == Decimal("0.000008")  # 0.0000075 rounds half to even
    assert llm.cost(1_000_000) == Decimal("2.500000")


def test_the_shipped_catalog_prices_every_kind_and_offline_providers_cost_nothing() -> None:
    settings = Settings()
    cat = load_catalog(settings.pricing.defaults_file, settings.pricing.overrides_file)
    when = date(2025, 6, 1)
    priced = {(e.provider, e.kind) for e in cat.entries}
    for provider in ("openai", "anthropic", "google", "groq"):
        assert {(provider, "llm_input_tokens"), (provider, "llm_output_tokens")} <= priced
    for provider in ("deepgram", "assemblyai", "openai", "whisper-local"):
        assert (provider, "stt_seconds") in priced
    for provider in ("elevenlabs", "cartesia", "openai", "resemble", "espeak"):
        assert (provider, "tts_characters") in priced
    assert ("twilio", "telephony_seconds") in priced
    assert {e.kind for e in cat.entries} == set(KINDS)
    for provider, kind in [("scripted", "llm_output_tokens"), ("whisper-local", "stt_seconds"),
                           ("espeak", "tts_characters")]:  # fmt: skip
        price = cat.price(provider, "anything", kind, when)
        assert price.unit_price == 0 and price.entry_id != UNPRICED
    gpt = cat.price("openai", "gpt-4o-mini", "llm_output_tokens", when)
    assert gpt.cost(1_000_000) == Decimal("0.600000")


def test_a_broken_catalog_is_refused_with_a_message_that_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps(doc("v", ("x", "*", "minutes", "1", 1, "2025-01-01"))))
    with pytest.raises(PricingError, match=r"prices.json: price #1: kind must be one of"):
        load_catalog(bad)
    bad.write_text(json.dumps({"prices": []}))
    with pytest.raises(PricingError, match="version"):
        load_catalog(bad)
    with pytest.raises(PricingError, match="cannot read"):
        load_catalog(tmp_path / "missing.json")
