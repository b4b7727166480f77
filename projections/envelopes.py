"""What each projector makes of one Kafka message (pure): the decoded envelope, then the rows
of the agents, calls and numbers read models and of the ClickHouse tables. Driven from Kafka by
``adapters.kafka.projectors``; a ``MalformedEnvelope`` raised here sends the message to the
dead-letter topic."""

from __future__ import annotations

import json
from typing import Any

from projections import clickhouse_rows as ch_rows
from projections.agents import MalformedEnvelope, agent_row, is_agent_event
from projections.calls import CallEvent, is_call_event, parse_call_event
from projections.numbers import (
    NUMBER_TYPES,
    REFUSAL_TYPES,
    clickhouse_number_row,
    clickhouse_refused_call_row,
    is_numbers_event,
    number_row,
)


def decode(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise MalformedEnvelope("empty message")
    try:
        env = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedEnvelope(f"not JSON: {exc}") from exc
    if not isinstance(env, dict) or "type" not in env:
        raise MalformedEnvelope("not an event envelope (a JSON object with a type)")
    return env


def pg_rows(env: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows for the agents view (none for other event types or a dead-lettered message)."""
    return [agent_row(env)] if env is not None and is_agent_event(env) else []


def ch_batch_rows(
    env: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(events rows, agents rows)`` for ClickHouse (none for a dead-lettered message)."""
    if env is None:
        return [], []
    agents = [ch_rows.clickhouse_agent_row(env)] if is_agent_event(env) else []
    return [ch_rows.clickhouse_event_row(env)], agents


def pg_events(env: dict[str, Any] | None) -> list[CallEvent]:
    """The call event for the calls view (none for other types or a dead-lettered message)."""
    return [parse_call_event(env)] if env is not None and is_call_event(env) else []


def ch_events(env: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[CallEvent]]:
    """``(events rows, call events)``: every envelope also goes to the ``events`` table."""
    if env is None:
        return [], []
    return [ch_rows.clickhouse_event_row(env)], pg_events(env)


def number_rows(env: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """``(table, row)`` for the numbers view (none for other types or a dead-lettered one)."""
    return [number_row(env)] if env is not None and is_numbers_event(env) else []


def ch_number_rows(
    env: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """``(events rows, numbers rows, refused_calls rows)`` for ClickHouse: every envelope of the
    numbers topic goes to ``events``; number events also to the ``numbers`` dimension, refused
    calls to ``refused_calls``."""
    if env is None:
        return [], [], []
    kind = env.get("type")
    numbers = [clickhouse_number_row(env)] if kind in NUMBER_TYPES else []
    refused = [clickhouse_refused_call_row(env)] if kind in REFUSAL_TYPES else []
    return [ch_rows.clickhouse_event_row(env)], numbers, refused
