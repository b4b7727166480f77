"""Pure projector of voice-agent events into the PostgreSQL ``agents`` read model (DESIGN §5).

Every agent event carries the whole configuration as of that event, so one envelope is enough
to build the row: no current row is needed and events are self-contained. No I/O here; the view
(``projections.agents_view``) applies the rows together with the tracking record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

CREATED = "agent.created"
UPDATED = "agent.updated"
ARCHIVED = "agent.archived"
AGENT_EVENT_TYPES = frozenset({CREATED, UPDATED, ARCHIVED})

# columns of the ``agents`` table, in the order the view writes them
AGENT_COLUMNS = (
    "id",
    "space_id",
    "name",
    "description",
    "language",
    "config",
    "config_version",
    "archived",
    "created_at",
    "updated_at",
    "archived_at",
    "version",
    "position",
)


class MalformedEnvelope(ValueError):
    """An envelope that no projector can use: it belongs in the dead-letter topic."""


def parse_occurred_at(value: str) -> datetime:
    """``2025-01-31T12:00:00.123Z`` -> an aware UTC datetime."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"occurred_at {value!r} has no timezone")
    return moment.astimezone(UTC)


def is_agent_event(env: dict[str, Any]) -> bool:
    return env.get("type") in AGENT_EVENT_TYPES


def agent_row(env: dict[str, Any]) -> dict[str, Any]:
    """The ``agents`` row an agent event leaves behind.

    ``created_at`` is set only by ``agent.created`` (the view keeps an existing row's value and
    falls back to ``updated_at`` when a later event arrives for a missing row); ``archived_at``
    only by ``agent.archived``. Raises ``MalformedEnvelope`` for anything unusable.
    """
    try:
        kind = env["type"]
        if kind not in AGENT_EVENT_TYPES:
            raise MalformedEnvelope(f"not an agent event: {kind!r}")
        data = env["data"]
        config = data["config"]
        occurred = parse_occurred_at(env["occurred_at"])
        row = {
            "id": str(UUID(str(env["aggregate_id"]))),
            "space_id": _text(env["space_id"], "space_id"),
            "name": _text(config["name"], "config.name"),
            "description": _text(config.get("description", ""), "config.description"),
            "language": _text(config.get("language", "en"), "config.language"),
            "config": config,
            "config_version": int(data["config_version"]),
            "archived": kind == ARCHIVED,
            "created_at": occurred if kind == CREATED else None,
            "updated_at": occurred,
            "archived_at": occurred if kind == ARCHIVED else None,
            "version": int(env["aggregate_version"]),
            "position": int(env["position"]),
        }
    except MalformedEnvelope:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedEnvelope(f"malformed agent envelope: {exc!r}") from exc
    if not isinstance(config, dict):
        raise MalformedEnvelope("malformed agent envelope: data.config is not an object")
    return row


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep only the highest version of each agent (first seen order of agents).

    A ``created_at`` seen on a lower version of the same batch is carried onto the kept row, so
    collapsing ``agent.created`` + ``agent.updated`` still records when the agent was created.
    """
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        current = best.get(row["id"])
        if current is None:
            best[row["id"]] = row
            continue
        newer, older = (row, current) if row["version"] > current["version"] else (current, row)
        if newer["created_at"] is None and older["created_at"] is not None:
            newer = {**newer, "created_at": older["created_at"]}
        best[row["id"]] = newer
    return list(best.values())


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedEnvelope(f"malformed agent envelope: {what} is not a string")
    if "\x00" in value:
        raise MalformedEnvelope(f"malformed agent envelope: {what} contains a NUL character")
    return value
