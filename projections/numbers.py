"""Pure projector of the numbers context (``voxagent.numbers.v1``) into its PostgreSQL read
models and its ClickHouse dimension (DESIGN §5).

Every number, trunk and provider-account event carries the whole public state as of that event,
so one envelope is enough to build its row; ``number.call_refused`` (one aggregate per refused
call) becomes a row of ``refused_calls`` and of ClickHouse ``refused_calls``. No I/O here;
``projections.numbers_view`` applies the rows with the tracking record. Secrets never reach
here (they are not in events).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from domain.phone_numbers import calling_code
from projections.agents import MalformedEnvelope, parse_occurred_at

NUMBER_TYPES = frozenset({
    "number.provisioned", "number.assigned", "number.unassigned", "number.caller_id_set",
    "number.caller_id_cleared", "number.released",
})  # fmt: skip
TRUNK_TYPES = frozenset({"trunk.created", "trunk.updated", "trunk.deleted"})
ACCOUNT_TYPES = frozenset({
    "provider_account.connected", "provider_account.updated", "provider_account.reconnected",
    "provider_account.disconnected",
})  # fmt: skip
REFUSAL_TYPES = frozenset({"number.call_refused"})
CREATED_TYPES = frozenset({
    "number.provisioned", "trunk.created", "provider_account.connected", "number.call_refused",
})  # fmt: skip

# table -> {column: PostgreSQL type}, in the order the view writes them
TABLES: dict[str, dict[str, str]] = {
    "numbers": {
        "id": "uuid", "space_id": "text", "e164": "text", "provider": "text",
        "provider_id": "text", "capabilities": "jsonb", "inbound_agent_id": "uuid",
        "outbound_agent_id": "uuid", "trunk_id": "uuid", "status": "text",
        "created_at": "timestamptz", "updated_at": "timestamptz", "released_at": "timestamptz",
        "version": "bigint", "position": "bigint",
    },
    "sip_trunks": {
        "id": "uuid", "space_id": "text", "name": "text", "trunk": "jsonb", "deleted": "boolean",
        "created_at": "timestamptz", "updated_at": "timestamptz", "version": "bigint",
        "position": "bigint",
    },
    "provider_accounts": {
        "id": "uuid", "space_id": "text", "provider": "text", "account_id": "text",
        "connected": "boolean", "created_at": "timestamptz", "updated_at": "timestamptz",
        "version": "bigint", "position": "bigint",
    },
    "refused_calls": {
        "id": "uuid", "space_id": "text", "number_id": "uuid", "e164": "text",
        "provider": "text", "caller": "text", "reason": "text", "provider_call_id": "text",
        "at": "timestamptz", "created_at": "timestamptz", "updated_at": "timestamptz",
        "version": "bigint", "position": "bigint",
    },
}  # fmt: skip

CLICKHOUSE_NUMBER_COLUMNS = (
    "number_id", "space_id", "e164", "country_code", "provider", "capabilities",
    "inbound_agent_id", "outbound_agent_id", "trunk_id", "status", "updated_at", "updated_at_ms",
    "version",
)  # fmt: skip

CLICKHOUSE_REFUSED_CALL_COLUMNS = (
    "refusal_id", "space_id", "number_id", "e164", "country_code", "provider", "caller",
    "reason", "provider_call_id", "at", "at_ms", "position",
)  # fmt: skip


def is_numbers_event(env: dict[str, Any]) -> bool:
    return env.get("type") in NUMBER_TYPES | TRUNK_TYPES | ACCOUNT_TYPES | REFUSAL_TYPES


def _uuid(value: Any) -> str | None:
    return None if value is None else str(UUID(str(value)))


def _text(value: Any, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise MalformedEnvelope(f"malformed numbers envelope: {what} is not a text")
    return value


def number_row(env: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(table, row)`` that a numbers-context event leaves behind. ``created_at`` is set only
    by the creating event (the view keeps an existing row's). ``MalformedEnvelope`` for
    anything unusable."""
    try:
        kind = env["type"]
        data = env["data"]
        occurred = parse_occurred_at(env["occurred_at"])
        base = {
            "id": str(UUID(str(env["aggregate_id"]))),
            "space_id": _text(env["space_id"], "space_id"),
            "created_at": occurred if kind in CREATED_TYPES else None,
            "updated_at": occurred,
            "version": int(env["aggregate_version"]),
            "position": int(env["position"]),
        }
        if kind in NUMBER_TYPES:
            capabilities = data["capabilities"]
            if not isinstance(capabilities, list):
                raise MalformedEnvelope("malformed number envelope: capabilities is no list")
            return "numbers", {
                **base,
                "e164": _text(data["e164"], "e164"),
                "provider": _text(data["provider"], "provider"),
                "provider_id": _text(data.get("provider_id"), "provider_id", optional=True),
                "capabilities": [str(c) for c in capabilities],
                "inbound_agent_id": _uuid(data.get("inbound_agent_id")),
                "outbound_agent_id": _uuid(data.get("outbound_agent_id")),
                "trunk_id": _uuid(data.get("trunk_id")),
                "status": _text(data["status"], "status"),
                "released_at": occurred if kind == "number.released" else None,
            }
        if kind in TRUNK_TYPES:
            trunk = data["trunk"]
            if not isinstance(trunk, dict):
                raise MalformedEnvelope("malformed trunk envelope: trunk is not an object")
            return "sip_trunks", {
                **base, "name": _text(trunk["name"], "trunk.name"), "trunk": trunk,
                "deleted": kind == "trunk.deleted",
            }  # fmt: skip
        if kind in REFUSAL_TYPES:
            return "refused_calls", {
                **base, "number_id": _uuid(data["number_id"]), "e164": _text(data["e164"], "e164"),
                "provider": _text(data["provider"], "provider"),
                "caller": _text(data.get("caller"), "caller", optional=True),
                "reason": _text(data["reason"], "reason"),
                "provider_call_id": _text(data["provider_call_id"], "provider_call_id"),
                "at": parse_occurred_at(data["at"]),
            }  # fmt: skip
        if kind in ACCOUNT_TYPES:
            return "provider_accounts", {
                **base, "provider": _text(data["provider"], "provider"),
                "account_id": _text(data["account_id"], "account_id"),
                "connected": kind != "provider_account.disconnected",
            }  # fmt: skip
    except MalformedEnvelope:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedEnvelope(f"malformed numbers envelope: {exc!r}") from exc
    raise MalformedEnvelope(f"not a numbers event: {kind!r}")


def latest_rows(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per table, the highest version of each aggregate (a ``created_at`` seen on a lower
    version of the batch is carried onto it), sorted by id: one lock order for all writers."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for table, row in rows:
        key = (table, row["id"])
        current = best.get(key)
        if current is None:
            best[key] = row
            continue
        newer, older = (row, current) if row["version"] > current["version"] else (current, row)
        if newer["created_at"] is None and older["created_at"] is not None:
            newer = {**newer, "created_at": older["created_at"]}
        best[key] = newer
    out: dict[str, list[dict[str, Any]]] = {}
    for (table, _), row in sorted(best.items()):
        out.setdefault(table, []).append(row)
    return out


def clickhouse_number_row(env: dict[str, Any]) -> dict[str, Any]:
    """A row of ClickHouse ``numbers`` (the number dimension) for a number event."""
    table, row = number_row(env)
    if table != "numbers":
        raise MalformedEnvelope(f"not a number event: {env.get('type')!r}")
    updated = row["updated_at"]
    e164 = row["e164"]
    if not isinstance(e164, str):
        raise MalformedEnvelope("malformed number envelope: e164 is not a text")
    return {
        "number_id": row["id"],
        "space_id": row["space_id"],
        "e164": e164,
        "country_code": calling_code(e164),
        "provider": row["provider"],
        "capabilities": ",".join(row["capabilities"]),
        "inbound_agent_id": row["inbound_agent_id"] or "",
        "outbound_agent_id": row["outbound_agent_id"] or "",
        "trunk_id": row["trunk_id"] or "",
        "status": row["status"],
        "updated_at": updated.replace(microsecond=0),
        "updated_at_ms": updated.microsecond // 1000,
        "version": row["version"],
    }


def clickhouse_refused_call_row(env: dict[str, Any]) -> dict[str, Any]:
    """A row of ClickHouse ``refused_calls`` for a ``number.call_refused`` event."""
    table, row = number_row(env)
    if table != "refused_calls":
        raise MalformedEnvelope(f"not a refused call: {env.get('type')!r}")
    at, e164 = row["at"], row["e164"]
    return {
        "refusal_id": row["id"],
        "space_id": row["space_id"],
        "number_id": row["number_id"],
        "e164": e164,
        "country_code": calling_code(e164),
        "provider": row["provider"],
        "caller": row["caller"] or "",
        "reason": row["reason"],
        "provider_call_id": row["provider_call_id"],
        "at": at.replace(microsecond=0),
        "at_ms": at.microsecond // 1000,
        "position": row["position"],
    }
