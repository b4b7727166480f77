"""The pricing catalog: unit prices per provider, model and usage kind, with effective dates.

Pure: a ``Catalog`` is built from JSON documents (the shipped defaults, then the operator's
overrides) and answers ``price(provider, model, kind, at)``. A document::

    {"version": "2025-06-01",
     "prices": [{"provider": "openai", "model": "gpt-4o", "kind": "llm_input_tokens",
                 "usd": "2.50", "per": 1000000, "effective_from": "2024-08-06"}]}

``usd`` (a decimal string) is the price of ``per`` units (default 1): seconds for
``stt_seconds`` / ``telephony_seconds``, tokens for ``llm_*_tokens``, characters for
``tts_characters``; a unit price (``usd / per``) is at most ``MAX_UNIT_PRICE_USD`` (0.01 USD per
base unit, domain/numbers.py: a cost must fit its columns). ``model`` ``"*"`` prices every model
of the provider that has no entry of its own. The chosen entry is the most specific (model beats
``"*"``), then the newest effective at the usage's date, then the overrides' at equal dates.
Unknown usage costs 0 with the entry id ``"unpriced"``: a projection never fails on a price.
Costs are Decimal, rounded half-even to micro-dollars, so the same events always give the same
cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from domain.numbers import MAX_UNIT_PRICE_USD

MICRO = Decimal("0.000001")
UNIT_PRICE_QUANTUM = Decimal("1e-12")
UNPRICED = "unpriced"
KINDS = (
    "stt_seconds",
    "llm_input_tokens",
    "llm_output_tokens",
    "tts_characters",
    "telephony_seconds",
)
# usage kind -> (VoxArena cost category, display unit, base units per display unit)
CATEGORY_OF: dict[str, tuple[str, str, int]] = {
    "stt_seconds": ("stt", "minutes", 60),
    "llm_input_tokens": ("llm_input", "tokens", 1),
    "llm_output_tokens": ("llm_output", "tokens", 1),
    "tts_characters": ("tts", "characters", 1),
    "telephony_seconds": ("telephony", "minutes", 60),
}
BASE_UNIT = {
    "stt_seconds": "second",
    "llm_input_tokens": "token",
    "llm_output_tokens": "token",
    "tts_characters": "character",
    "telephony_seconds": "second",
}
CATEGORIES = tuple(c for c, _, _ in CATEGORY_OF.values())


class PricingError(ValueError):
    """A catalog document that cannot be used (raised when loading, never when pricing)."""


def category(kind: str) -> str:
    return CATEGORY_OF[kind][0] if kind in CATEGORY_OF else "other"


@dataclass(frozen=True)
class Entry:
    provider: str
    model: str
    kind: str
    usd: Decimal
    per: int
    effective_from: date
    catalog: str
    rank: int  # 0 for the shipped defaults, 1 for overrides: wins at equal dates

    @property
    def id(self) -> str:
        return f"{self.catalog}:{self.provider}/{self.model}/{self.kind}@{self.effective_from}"

    @property
    def unit_price(self) -> Decimal:
        return (self.usd / self.per).quantize(UNIT_PRICE_QUANTUM, ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Price:
    unit_price: Decimal  # USD per base unit (second, token, character)
    entry_id: str
    usd: Decimal = Decimal(0)
    per: int = 1

    def cost(self, quantity: float | Decimal | int) -> Decimal:
        """quantity x price, rounded half-even to micro-dollars."""
        return cost_of(quantity, self)


def decimal_of(quantity: float | Decimal | int) -> Decimal:
    """A float's shortest repr as a Decimal (``12.3`` -> ``Decimal("12.3")``): deterministic."""
    if isinstance(quantity, Decimal):
        return quantity
    return Decimal(repr(quantity)) if isinstance(quantity, float) else Decimal(quantity)


def cost_of(quantity: float | Decimal | int, price: Price) -> Decimal:
    exact = decimal_of(quantity) * price.usd / price.per
    return exact.quantize(MICRO, ROUND_HALF_EVEN)


class Catalog:
    """Every entry of the defaults and overrides, indexed by (provider, kind)."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries = list(entries)
        self._by_key: dict[tuple[str, str], list[Entry]] = {}
        for entry in self.entries:
            self._by_key.setdefault((entry.provider, entry.kind), []).append(entry)
        for found in self._by_key.values():
            # most preferred first: specific model, newest date, overrides
            found.sort(key=lambda e: (e.model == "*", -e.effective_from.toordinal(), -e.rank))
        self.versions = sorted({e.catalog for e in self.entries})

    def price(self, provider: str, model: str, kind: str, at: date | datetime) -> Price:
        """The unit price effective at ``at`` and the catalog entry it comes from."""
        day = at.date() if isinstance(at, datetime) else at
        model = (model or "").strip().lower()
        for entry in self._by_key.get(((provider or "").strip().lower(), kind), ()):
            if entry.model in (model, "*") and entry.effective_from <= day:
                return Price(entry.unit_price, entry.id, entry.usd, entry.per)
        return Price(Decimal(0), UNPRICED)


def parse_document(doc: Any, rank: int = 0, where: str = "catalog") -> list[Entry]:
    """The entries of one catalog document; raises ``PricingError`` saying what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("prices"), list):
        raise PricingError(f"{where}: expected an object with a 'prices' list")
    version = str(doc.get("version") or "").strip()
    if not version:
        raise PricingError(f"{where}: 'version' (the catalog version id) is required")
    entries = []
    for i, item in enumerate(doc["prices"]):
        try:
            kind = str(item["kind"])
            if kind not in KINDS:
                raise PricingError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
            usd, per = Decimal(str(item["usd"])), int(item.get("per", 1))
            if usd < 0 or per <= 0:
                raise PricingError("usd must be >= 0 and per > 0")
            if usd / per > MAX_UNIT_PRICE_USD:
                raise PricingError(
                    f"usd / per must be at most {MAX_UNIT_PRICE_USD} USD per "
                    f"{BASE_UNIT[kind]} (so that every cost fits its columns)"
                )
            entries.append(
                Entry(
                    provider=str(item["provider"]).strip().lower(),
                    model=str(item.get("model", "*")).strip().lower() or "*",
                    kind=kind,
                    usd=usd,
                    per=per,
                    effective_from=date.fromisoformat(str(item["effective_from"])),
                    catalog=version,
                    rank=rank,
                )
            )
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise PricingError(f"{where}: price #{i + 1}: {exc}") from exc
    return entries


def load_catalog(defaults: Path | None, overrides: Path | None = None) -> Catalog:
    """The shipped defaults (``infra/pricing/default.json``) plus the operator's overrides."""
    entries: list[Entry] = []
    for rank, path in enumerate((defaults, overrides)):
        if path is None:
            continue
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise PricingError(f"cannot read pricing catalog {path}: {exc}") from exc
        entries += parse_document(doc, rank, str(path))
    return Catalog(entries)


def catalog_from_settings(settings: Any) -> Catalog:
    """The catalog named by ``settings.pricing`` (``infra.settings.PricingSettings``)."""
    return load_catalog(settings.pricing.defaults_file, settings.pricing.overrides_file)
