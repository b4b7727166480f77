"""Pure projectors of call events into read-model rows (DESIGN §5). No I/O.

Call events are not self-contained (only ``call.initiated`` names the agent), so the call row is
a fold: ``fold_call(row, event)`` is the row after one event, given the row before it. A batch is
projected with ``project_calls(events, current_rows)``: events at or below a row's version are
already in it and change nothing (redelivery), later ones fold in order. Every event also leaves
one row of its own (transcript, tool call, usage, turn metrics, key press) keyed by
``(call_id, seq)`` with ``seq`` the aggregate version, so re-inserting it is a no-op. The same
functions feed PostgreSQL (``projections.calls_view``) and ClickHouse
(``projections.calls_clickhouse``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from projections.agents import MalformedEnvelope, parse_occurred_at
from projections.pricing import Catalog, category

INITIATED, STARTED, TRANSCRIPT = "call.initiated", "call.started", "call.transcript_added"
TOOL, USAGE, TURN = "call.tool_invoked", "call.usage_recorded", "call.turn_metrics_recorded"
TRANSFER_REQUESTED, TRANSFER_COMPLETED = "call.transfer_requested", "call.transfer_completed"
DTMF, ENDED = "call.dtmf_received", "call.ended"
PROVIDER_STATUS = "call.provider_status_changed"
CALL_EVENT_TYPES = frozenset(
    {INITIATED, STARTED, TRANSCRIPT, TOOL, USAGE, TURN, TRANSFER_REQUESTED, TRANSFER_COMPLETED}
    | {DTMF, ENDED, PROVIDER_STATUS}
)
CALL_COLUMNS = (
    "id", "space_id", "agent_id", "agent_config_version", "direction", "channel",
    "from_number", "to_number", "room_name", "status", "initiated_at", "started_at", "ended_at",
    "end_reason", "duration_ms", "transfer_mode", "transfer_target", "transfer_status",
    "transfer_requested_at", "transfer_completed_at", "transcript_count", "tool_call_count",
    "tool_error_count", "turn_count", "usage_count", "total_cost_usd", "version", "position",
    "updated_at", "provider", "provider_call_id", "provider_status", "answered_by",
    "transfer_outcome", "transfer_reason",
)  # fmt: skip
TRANSCRIPT_COLUMNS = (
    "call_id", "seq", "space_id", "turn_id", "speaker", "text", "start_ms", "end_ms", "at",
    "position", "interrupted",
)  # fmt: skip
TOOL_CALL_COLUMNS = (
    "call_id", "seq", "space_id", "turn_id", "name", "arguments", "result", "error", "status",
    "latency_ms", "at", "position",
)  # fmt: skip
USAGE_COLUMNS = (
    "call_id", "seq", "space_id", "agent_id", "provider", "model", "kind", "category",
    "quantity", "unit_price", "cost_usd", "price_entry", "at", "day", "position",
)  # fmt: skip
TURN_COLUMNS = (
    "call_id", "seq", "space_id", "turn_id", "end_of_speech_to_first_audio_ms", "stt_final_ms",
    "llm_first_token_ms", "tts_first_byte_ms", "at", "position",
)  # fmt: skip
DTMF_COLUMNS = ("call_id", "seq", "space_id", "digit", "offset_ms", "at", "position")
PROVIDER_STATUS_COLUMNS = (
    "call_id", "seq", "space_id", "provider", "provider_call_id", "status", "answered_by",
    "sip_code", "reason", "at", "position",
)  # fmt: skip
EVENT_TABLE = {
    TRANSCRIPT: "transcripts", TOOL: "tool_calls", USAGE: "usage", TURN: "turns", DTMF: "dtmf",
    PROVIDER_STATUS: "provider_statuses",
}  # fmt: skip


@dataclass(frozen=True)
class CallEvent:
    """A validated call envelope: what the projectors need of it."""

    type: str
    call_id: str
    space_id: str
    version: int
    position: int
    occurred_at: datetime
    at: datetime  # when it happened, from the signal (falls back to occurred_at)
    data: dict[str, Any]


@dataclass
class CallChanges:
    """What a batch changes: call rows (latest state of each touched call) and event rows."""

    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {t: [] for t in EVENT_TABLE.values()}
    )


def is_call_event(env: dict[str, Any]) -> bool:
    return env.get("type") in CALL_EVENT_TYPES


def _moment(value: Any, fallback: datetime) -> datetime:
    if not isinstance(value, str):
        return fallback
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return fallback
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def clean(value: Any) -> Any:
    """PostgreSQL text and jsonb refuse NUL characters: replace them, keep the rest."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {clean(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def parse_call_event(env: dict[str, Any]) -> CallEvent:
    """Validate a call envelope; raises ``MalformedEnvelope`` for anything unusable."""
    try:
        if env["type"] not in CALL_EVENT_TYPES:
            raise MalformedEnvelope(f"not a call event: {env['type']!r}")
        occurred = parse_occurred_at(env["occurred_at"])
        data = env["data"]
        if not isinstance(data, dict):
            raise MalformedEnvelope("malformed call envelope: data is not an object")
        version = int(env["aggregate_version"])
        if version < 1:
            raise MalformedEnvelope("malformed call envelope: aggregate_version < 1")
        return CallEvent(
            type=env["type"],
            call_id=str(UUID(str(env["aggregate_id"]))),
            space_id=clean(str(env["space_id"])),
            version=version,
            position=int(env["position"]),
            occurred_at=occurred,
            at=_moment(data.get("at"), occurred),
            data=clean(data),
        )
    except MalformedEnvelope:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedEnvelope(f"malformed call envelope: {exc!r}") from exc


def empty_call(call_id: str, space_id: str) -> dict[str, Any]:
    """The row of a call whose ``call.initiated`` has not been seen (yet)."""
    row: dict[str, Any] = dict.fromkeys(CALL_COLUMNS)
    row.update(id=call_id, space_id=space_id, status="initiated", total_cost_usd=Decimal(0))
    for counter in ("transcript", "tool_call", "tool_error", "turn", "usage"):
        row[f"{counter}_count"] = 0
    row["version"] = 0
    return row


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def usage_row(ev: CallEvent, agent_id: str | None, catalog: Catalog) -> dict[str, Any]:
    d = ev.data
    provider, model, kind = str(d["provider"]), str(d.get("model") or ""), str(d["kind"])
    quantity = float(d["quantity"])
    price = catalog.price(provider, model, kind, ev.at)
    return {
        "call_id": ev.call_id,
        "seq": ev.version,
        "space_id": ev.space_id,
        "agent_id": agent_id or "",
        "provider": provider,
        "model": model,
        "kind": kind,
        "category": category(kind),
        "quantity": quantity,
        "unit_price": price.unit_price,
        "cost_usd": price.cost(quantity),
        "price_entry": price.entry_id,
        "at": ev.at,
        "day": ev.at.date(),
        "position": ev.position,
    }


def event_row(ev: CallEvent, call: Mapping[str, Any] | None, catalog: Catalog) -> dict[str, Any]:
    """The row of ``transcripts`` / ``tool_calls`` / ``usage`` / ``turns`` / ``dtmf`` this event
    leaves."""
    agent_id = (call.get("agent_id") if call else None) or ""
    d, base = ev.data, {"call_id": ev.call_id, "seq": ev.version, "space_id": ev.space_id}
    tail = {"at": ev.at, "position": ev.position, "agent_id": agent_id}
    if ev.type == USAGE:
        return usage_row(ev, agent_id, catalog)
    if ev.type == TRANSCRIPT:
        start, end = int(d["start_ms"]), int(d["end_ms"])
        return {**base, "turn_id": str(d["turn_id"]), "speaker": str(d["speaker"]),
                "text": str(d["text"]), "start_ms": start, "end_ms": end,
                "interrupted": bool(d.get("interrupted", False)), **tail}  # fmt: skip
    if ev.type == TOOL:
        return {**base, "turn_id": d.get("turn_id"), "name": str(d["name"]),
                "arguments": d.get("arguments") or {}, "result": d.get("result"),
                "error": d.get("error"), "status": str(d["status"]),
                "latency_ms": int(d["latency_ms"]), **tail}  # fmt: skip
    if ev.type == TURN:
        return {**base, "turn_id": str(d["turn_id"]),
                **{k: _int(d.get(k)) for k in TURN_COLUMNS[4:8]}, **tail}  # fmt: skip
    if ev.type == DTMF:
        return {**base, "digit": str(d["digit"]), "offset_ms": int(d["offset_ms"]), **tail}
    if ev.type == PROVIDER_STATUS:
        return {**base, "provider": str(d["provider"]),
                "provider_call_id": str(d["provider_call_id"]), "status": str(d["status"]),
                "answered_by": d.get("answered_by"), "sip_code": _int(d.get("sip_code")),
                "reason": d.get("reason"), **tail}  # fmt: skip
    raise ValueError(f"{ev.type} leaves no event row")


def fold_call(
    row: Mapping[str, Any] | None, ev: CallEvent, cost: Decimal = Decimal(0)
) -> dict[str, Any]:
    """The call row after ``ev`` (which must be newer than ``row``); ``cost`` of a usage."""
    new = dict(row) if row is not None else empty_call(ev.call_id, ev.space_id)
    d, kind = ev.data, ev.type
    if kind == INITIATED:
        new.update({k: d.get(k) for k in ("agent_id", "direction", "channel", "room_name")})
        new.update(from_number=d.get("from_number"), to_number=d.get("to_number"))
        new.update(agent_config_version=_int(d.get("agent_config_version")), initiated_at=ev.at)
        if new["agent_id"] is not None:
            new["agent_id"] = str(new["agent_id"])
    elif kind == STARTED:
        new["started_at"] = ev.at
        if new["status"] == "initiated":
            new["status"] = "in_progress"
    elif kind == TRANSCRIPT:
        new["transcript_count"] += 1
    elif kind == TOOL:
        new["tool_call_count"] += 1
        new["tool_error_count"] += d.get("status") != "ok"
    elif kind == TURN:
        new["turn_count"] += 1
    elif kind == USAGE:
        new["usage_count"] += 1
        new["total_cost_usd"] = Decimal(new["total_cost_usd"]) + cost
    elif kind == TRANSFER_REQUESTED:
        new.update(transfer_mode=d.get("mode"), transfer_target=d.get("target"))
        new.update(transfer_status="requested", transfer_requested_at=ev.at, status="transferring")
        new.update(transfer_completed_at=None, transfer_outcome=None, transfer_reason=None)
    elif kind == TRANSFER_COMPLETED:
        new["transfer_status"] = "completed" if d.get("succeeded") else "failed"
        new["transfer_completed_at"] = ev.at
        if new["status"] != "ended":  # a transfer's outcome may come after the agent's end
            new["status"] = "in_progress"
        outcome = d.get("outcome") or ("completed" if d.get("succeeded") else "failed")
        new.update(transfer_outcome=outcome, transfer_reason=d.get("reason"))
    elif kind == PROVIDER_STATUS:
        new.update(provider=d.get("provider"), provider_call_id=d.get("provider_call_id"))
        new["provider_status"] = d.get("status")
        if d.get("answered_by") is not None:
            new["answered_by"] = d.get("answered_by")
    elif kind == ENDED:
        new.update(status="ended", ended_at=ev.at, end_reason=d.get("reason"))
        new["duration_ms"] = _int(d.get("duration_ms"))
    new.update(version=ev.version, position=ev.position, updated_at=ev.occurred_at)
    if new["initiated_at"] is None:
        new["initiated_at"] = ev.at  # a call first seen mid-stream: the earliest moment known
    return new


def project_calls(
    events: Iterable[CallEvent], current: Mapping[str, Mapping[str, Any]], catalog: Catalog
) -> CallChanges:
    """Fold a batch (in stream order) onto the current rows of its calls.

    Returns only the calls whose row changed, and every event's own row (duplicates included:
    their tables ignore a ``(call_id, seq)`` they hold already)."""
    changes = CallChanges()
    state: dict[str, Mapping[str, Any]] = {}
    for ev in events:
        row = state.get(ev.call_id, current.get(ev.call_id))
        cost = Decimal(0)
        if ev.type in EVENT_TABLE:
            own = event_row(ev, row, catalog)
            changes.events[EVENT_TABLE[ev.type]].append(own)
            cost = own.get("cost_usd", cost)
        if row is not None and ev.version <= int(row["version"]):
            continue  # already folded in
        state[ev.call_id] = changes.calls[ev.call_id] = fold_call(row, ev, cost)
    return changes
