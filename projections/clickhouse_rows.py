"""Pure projectors of event envelopes into ClickHouse rows (DESIGN §5, ``infra/sql/clickhouse``).

ClickHouse 18.16 has no DateTime64 and no JSON type: timestamps are a ``DateTime`` plus a
millisecond column, the event's data is compact JSON text, and agent settings analysts filter
on are plain columns. Both tables are ReplacingMergeTree, so re-inserting a row is harmless.
"""

from __future__ import annotations

import json
from typing import Any

from projections.agents import MalformedEnvelope, agent_row, parse_occurred_at

EVENT_COLUMNS = (
    "event_id",
    "type",
    "schema_version",
    "space_id",
    "aggregate_id",
    "aggregate_version",
    "position",
    "occurred_at",
    "occurred_at_ms",
    "trace_id",
    "data",
)
AGENT_COLUMNS = (
    "agent_id",
    "space_id",
    "name",
    "language",
    "stt_provider",
    "stt_model",
    "llm_provider",
    "llm_model",
    "llm_temperature",
    "tts_provider",
    "tts_voice",
    "tools_count",
    "max_call_duration_seconds",
    "config_version",
    "archived",
    "updated_at",
    "updated_at_ms",
    "version",
)


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def clickhouse_event_row(env: dict[str, Any]) -> dict[str, Any]:
    """A row of ``events``: any event of any context, its data as compact JSON text."""
    try:
        occurred = parse_occurred_at(env["occurred_at"])
        return {
            "event_id": str(env["event_id"]),
            "type": str(env["type"]),
            "schema_version": int(env.get("schema_version", 1)),
            "space_id": str(env["space_id"]),
            "aggregate_id": str(env["aggregate_id"]),
            "aggregate_version": int(env["aggregate_version"]),
            "position": int(env["position"]),
            "occurred_at": occurred.replace(microsecond=0),
            "occurred_at_ms": occurred.microsecond // 1000,
            "trace_id": str(env.get("trace_id") or ""),
            "data": compact_json(env.get("data", {})),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedEnvelope(f"malformed envelope: {exc!r}") from exc


def clickhouse_agent_row(env: dict[str, Any]) -> dict[str, Any]:
    """A row of ``agents``: the agent's settings as of this event, flattened for analysts."""
    row = agent_row(env)
    config = row["config"]
    try:
        stt, llm, tts = (config.get(k) or {} for k in ("stt", "llm", "tts"))
        updated = row["updated_at"]
        return {
            "agent_id": row["id"],
            "space_id": row["space_id"],
            "name": row["name"],
            "language": row["language"],
            "stt_provider": stt.get("provider") or "",
            "stt_model": stt.get("model") or "",
            "llm_provider": llm.get("provider") or "",
            "llm_model": llm.get("model") or "",
            "llm_temperature": float(llm.get("temperature", 0.0)),
            "tts_provider": tts.get("provider") or "",
            "tts_voice": tts.get("voice") or "",
            "tools_count": len(config.get("tools") or ()),
            "max_call_duration_seconds": int(config.get("max_call_duration_seconds", 0)),
            "config_version": row["config_version"],
            "archived": 1 if row["archived"] else 0,
            "updated_at": updated.replace(microsecond=0),
            "updated_at_ms": updated.microsecond // 1000,
            "version": row["version"],
        }
    except (AttributeError, TypeError, ValueError) as exc:
        raise MalformedEnvelope(f"malformed agent envelope: {exc!r}") from exc
