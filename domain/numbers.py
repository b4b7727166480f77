"""Numbers and moments our stores can hold: the bounds every command and signal follows.

The companion of ``domain/text.py``: an accepted command becomes an event that every read model
must be able to apply, so a number is bounded by the narrowest column that stores it (or a value
derived from it), and a moment by the narrowest date-time column:

- ``Millis`` (offsets, durations, latencies): ``0 .. 2**32 - 1`` (~49.7 days), ClickHouse
  ``UInt32`` (``transcripts.start_ms``, ``tool_calls.latency_ms``, ``dtmf.offset_ms``,
  ``turns.*_ms``; PostgreSQL stores them as ``bigint``).
- ``Quantity`` (usage): finite, ``0 .. 1e9``. Its cost (quantity x unit price, the catalogue's
  unit prices are at most ``MAX_UNIT_PRICE_USD``) is at most 1e7 USD = 1e13 micro-dollars:
  PostgreSQL ``numeric(20,6)`` holds 1e14 USD, ClickHouse ``cost_micros UInt64`` 1.8e19 micros,
  so a call's total or a day's sum overflows only after millions of maximal usage records.
- ``ConfigVersion`` (an agent's configuration version): ``1 .. 2**31 - 1``, PostgreSQL
  ``integer`` (``calls.agent_config_version``; ClickHouse ``UInt32``).
- ``Moment`` (when a signal or call command says something happened): years
  ``MIN_YEAR .. MAX_YEAR`` (2000..2100, UTC); ClickHouse ``DateTime`` holds 1970..2106.

A refusal is an ordinary pydantic error (``less_than_equal``, ``finite_number``, or
``moment_out_of_range``): the HTTP API answers 422 ``invalid_request``, ingest rejects the signal
as ``invalid_signal``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

MAX_MILLIS = 2**32 - 1
MAX_QUANTITY = 1e9
MAX_CONFIG_VERSION = 2**31 - 1
MAX_UNIT_PRICE_USD = Decimal("0.01")  # per base unit (second, token, character)
MIN_YEAR = 2000
MAX_YEAR = 2100
MOMENT_OUT_OF_RANGE = "moment_out_of_range"

Millis = Annotated[int, Field(ge=0, le=MAX_MILLIS)]
Quantity = Annotated[float, Field(ge=0, le=MAX_QUANTITY, allow_inf_nan=False)]
ConfigVersion = Annotated[int, Field(ge=1, le=MAX_CONFIG_VERSION)]


def check_moment(moment: datetime) -> datetime:
    """``moment`` unchanged when it falls in years MIN_YEAR..MAX_YEAR in UTC (a naive moment is
    taken as UTC); a pydantic error saying why otherwise."""
    try:
        year = moment.astimezone(UTC).year if moment.tzinfo else moment.year
    except OverflowError:  # 0001-01-01T00:00+01:00 and the like
        year = moment.year
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise PydanticCustomError(
            MOMENT_OUT_OF_RANGE,
            "year {year} is out of range: a moment must fall in {low}..{high} (UTC)",
            {"year": year, "low": MIN_YEAR, "high": MAX_YEAR},
        )
    return moment


Moment = Annotated[datetime, AfterValidator(check_moment)]
