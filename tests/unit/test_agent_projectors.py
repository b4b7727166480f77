"""Given agent envelopes -> then read-model rows (PostgreSQL and ClickHouse). Pure code only."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest

from domain.agent_config import AgentConfig
from domain.agents import VoiceAgent
from domain.contract import envelope
from projections.agents import MalformedEnvelope, agent_row, latest_rows
from projections.clickhouse_rows import clickhouse_agent_row, clickhouse_event_row
from projections.envelopes import decode, pg_rows

pytestmark = pytest.mark.unit


def history(*patches: dict[str, Any], archive: bool = False) -> list[dict[str, Any]]:
    """Envelopes of one agent: created, one update per patch, then maybe archived."""
    positions = count(100)
    agent = VoiceAgent.create("space-1", AgentConfig(name="Ada", language="en"), "alice")
    for patch in patches:
        agent.update(patch, "bob")
    if archive:
        agent.archive("carol")
    return [envelope(e, next(positions)) for e in agent.collect_events()]


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def test_created_event_becomes_a_whole_row() -> None:
    (created,) = history()
    row = agent_row(created)
    assert row["id"] == created["aggregate_id"]
    assert row["space_id"] == "space-1"
    assert (row["name"], row["description"], row["language"]) == ("Ada", "", "en")
    assert row["config"] == created["data"]["config"]
    assert (row["config_version"], row["version"], row["position"]) == (1, 1, 100)
    assert row["archived"] is False and row["archived_at"] is None
    assert row["created_at"] == row["updated_at"] == at(created["occurred_at"])
    assert row["created_at"].tzinfo is not None


def test_updated_event_carries_the_whole_config_but_not_created_at() -> None:
    _, updated = history({"name": "Ada 2", "llm": {"provider": "openai"}})
    row = agent_row(updated)
    assert row["name"] == "Ada 2"
    assert row["config"]["llm"]["provider"] == "openai"
    assert (row["config_version"], row["version"], row["position"]) == (2, 2, 101)
    assert row["created_at"] is None
    assert row["updated_at"] == at(updated["occurred_at"])


def test_archived_event_marks_the_row_archived() -> None:
    *_, archived = history(archive=True)
    row = agent_row(archived)
    assert row["archived"] is True
    assert row["archived_at"] == row["updated_at"] == at(archived["occurred_at"])
    assert row["config_version"] == 1 and row["version"] == 2


def test_batch_keeps_the_highest_version_and_remembers_created_at() -> None:
    envs = history({"name": "B"}, {"name": "C"})
    rows = latest_rows([agent_row(e) for e in envs])
    assert len(rows) == 1
    assert (rows[0]["name"], rows[0]["version"]) == ("C", 3)
    assert rows[0]["created_at"] == at(envs[0]["occurred_at"])


def test_duplicates_and_older_versions_in_a_batch_change_nothing() -> None:
    envs = history({"name": "B"})
    newest = agent_row(envs[1])
    rows = latest_rows([agent_row(e) for e in [envs[1], envs[0], envs[1], envs[0]]])
    assert rows == [{**newest, "created_at": at(envs[0]["occurred_at"])}]


def test_projection_is_deterministic() -> None:
    envs = history({"name": "B"}, archive=True)
    assert [agent_row(e) for e in envs] == [agent_row(json.loads(json.dumps(e))) for e in envs]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda e: e.pop("data"),
        lambda e: e["data"].pop("config"),
        lambda e: e.update(aggregate_id="not-a-uuid"),
        lambda e: e.update(occurred_at="yesterday"),
        lambda e: e["data"].update(config="not an object"),
        lambda e: e["data"]["config"].update(name=None),
        lambda e: e.update(type="number.provisioned"),
    ],
)
def test_unusable_envelopes_are_rejected(breakage: Any) -> None:
    (env,) = history()
    breakage(env)
    with pytest.raises(MalformedEnvelope):
        agent_row(env)


def test_decode_rejects_what_is_not_an_envelope() -> None:
    for raw in (b"{not json", b"\xff\xfe", b"[1, 2]", b'{"no": "type"}', None):
        with pytest.raises(MalformedEnvelope):
            decode(raw)
    (env,) = history()
    assert decode(json.dumps(env).encode()) == env


def test_events_of_other_types_project_to_no_agent_rows() -> None:
    (env,) = history()
    assert pg_rows({**env, "type": "agent.renamed_in_the_future"}) == []
    assert len(pg_rows(env)) == 1


def test_clickhouse_event_row_splits_milliseconds_and_keeps_data_as_compact_json() -> None:
    (env,) = history()
    env["occurred_at"] = "2025-03-04T05:06:07.089Z"
    row = clickhouse_event_row(env)
    assert row["occurred_at"] == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert row["occurred_at_ms"] == 89
    assert row["event_id"] == env["event_id"] and row["type"] == "agent.created"
    assert row["aggregate_version"] == 1 and row["position"] == 100
    assert row["trace_id"] == ""
    assert json.loads(row["data"]) == env["data"]
    assert ", " not in row["data"] and ": " not in row["data"]


def test_clickhouse_agent_row_flattens_the_settings_analysts_filter_on() -> None:
    _, updated = history(
        {
            "llm": {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.2},
            "tts": {"voice": "alloy"},
            "tools": [{"name": "lookup", "description": "Look up", "url": "https://x.example/a"}],
        }
    )
    row = clickhouse_agent_row(updated)
    assert row["agent_id"] == updated["aggregate_id"]
    assert (row["llm_provider"], row["llm_model"]) == ("openai", "gpt-4o-mini")
    assert row["llm_temperature"] == pytest.approx(0.2)
    assert (row["stt_provider"], row["stt_model"]) == ("whisper-local", "")
    assert (row["tts_provider"], row["tts_voice"]) == ("espeak", "alloy")
    assert row["tools_count"] == 1
    assert (row["config_version"], row["version"], row["archived"]) == (2, 2, 0)
    assert row["max_call_duration_seconds"] == 1800
    assert row["updated_at"].microsecond == 0
    assert 0 <= row["updated_at_ms"] < 1000
