"""Given call envelopes -> then read-model rows (PostgreSQL and ClickHouse). Pure code only."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from itertools import count
from typing import Any

import pytest

from domain.calls import Call
from domain.contract import envelope
from projections.agents import MalformedEnvelope
from projections.calls import (
    CallEvent,
    empty_call,
    fold_call,
    parse_call_event,
    project_calls,
)
from projections.calls_clickhouse import (
    CALL_COLUMNS,
    EVENT_COLUMNS,
    call_state,
    changes_rows,
    clickhouse_call_row,
)
from projections.envelopes import ch_events, pg_events
from projections.pricing import Catalog, parse_document

pytestmark = pytest.mark.unit

CATALOG = Catalog(
    parse_document(
        {
            "version": "test-1",
            "prices": [
                {
                    "provider": "deepgram",
                    "kind": "stt_seconds",
                    "usd": "0.0060",
                    "per": 60,
                    "effective_from": "2025-01-01",
                },
                {
                    "provider": "openai",
                    "model": "gpt-4o",
                    "kind": "llm_input_tokens",
                    "usd": "2.50",
                    "per": 1000000,
                    "effective_from": "2025-01-01",
                },
            ],
        }  # fmt: skip
    )
)


def t(second: int) -> str:
    return f"2025-03-01T10:00:{second:02d}.250Z"


def history() -> list[dict[str, Any]]:
    """A whole call: initiated, started, two lines, a tool, usage, a transfer, metrics, a key
    press, ended."""
    positions = count(10)
    call = Call.initiate(
        space_id="space-1", agent_id="agent-1", agent_config_version=3, direction="inbound",
        channel="twilio_sip", room_name="room-1", at=t(0), from_number="+15550001",
        to_number="+15550002",
    )  # fmt: skip
    call.start(at=t(1))
    call.add_transcript(turn_id="t1", speaker="agent", text="Hello", start_ms=500, end_ms=900,
                        at=t(2))  # fmt: skip
    call.add_transcript(turn_id="t1", speaker="user", text="Hi \x00 there", start_ms=100,
                        end_ms=400, at=t(3))  # fmt: skip
    call.invoke_tool(name="lookup", arguments={"q": "x"}, result=None, error="boom",
                     status="error", latency_ms=120, at=t(4), turn_id="t1")  # fmt: skip
    call.record_usage(provider="deepgram", model="nova-2", kind="stt_seconds", quantity=61.5,
                      at=t(5))  # fmt: skip
    call.record_usage(provider="openai", model="gpt-4o", kind="llm_input_tokens", quantity=1000,
                      at=t(6))  # fmt: skip
    call.record_usage(provider="mystery", model="m", kind="tts_characters", quantity=10, at=t(7))
    call.request_transfer(mode="warm", target="+15559999", at=t(8))
    call.complete_transfer(outcome="completed", reason="answered", at=t(9))
    call.record_turn_metrics(turn_id="t1", at=t(10), end_of_speech_to_first_audio_ms=800,
                             llm_first_token_ms=300)  # fmt: skip
    call.receive_dtmf(digit="#", offset_ms=9_400, at=t(10))
    call.record_provider_status(provider="twilio", provider_call_id="CA1", status="in-progress",
                                answered_by="human", sip_code=200, at=t(10))  # fmt: skip
    call.end(reason="hangup", duration_ms=10_000, at=t(11))
    return [envelope(e, next(positions)) for e in call.collect_events()]


def events(envs: list[dict[str, Any]] | None = None) -> list[CallEvent]:
    return [parse_call_event(env) for env in envs or history()]


def test_a_whole_call_folds_into_one_row() -> None:
    envs = history()
    changes = project_calls(events(envs), {}, CATALOG)
    (row,) = changes.calls.values()
    assert row["id"] == envs[0]["aggregate_id"] and row["space_id"] == "space-1"
    assert (row["agent_id"], row["agent_config_version"], row["channel"]) == (
        "agent-1", 3, "twilio_sip"
    )  # fmt: skip
    assert (row["status"], row["end_reason"], row["duration_ms"]) == ("ended", "hangup", 10_000)
    assert row["initiated_at"] == datetime(2025, 3, 1, 10, 0, 0, 250000, tzinfo=UTC)
    assert row["ended_at"] == datetime(2025, 3, 1, 10, 0, 11, 250000, tzinfo=UTC)
    assert (row["transfer_mode"], row["transfer_target"], row["transfer_status"]) == (
        "warm", "+15559999", "completed"
    )  # fmt: skip
    assert (row["transfer_outcome"], row["transfer_reason"]) == ("completed", "answered")
    assert (row["provider"], row["provider_call_id"], row["provider_status"]) == (
        "twilio", "CA1", "in-progress"
    )  # fmt: skip
    assert row["answered_by"] == "human"
    counts = [row[f"{c}_count"] for c in ("transcript", "tool_call", "tool_error", "turn", "usage")]
    assert counts == [2, 1, 1, 1, 3]
    # 61.5 s of STT at 0.006/min = 0.00615; 1000 tokens at 2.50/M = 0.0025; unknown = 0
    assert row["total_cost_usd"] == Decimal("0.008650")
    assert (row["version"], row["position"]) == (len(envs), 10 + len(envs) - 1)


def test_status_follows_the_lifecycle() -> None:
    statuses, row = [], None
    for ev in events():
        row = fold_call(row, ev)
        statuses.append(row["status"])
    assert statuses[:2] == ["initiated", "in_progress"]
    assert statuses[8:10] == ["transferring", "in_progress"] and statuses[-1] == "ended"


def test_every_event_leaves_its_own_row_keyed_by_version() -> None:
    changes = project_calls(events(), {}, CATALOG)
    lines = changes.events["transcripts"]
    assert [(r["seq"], r["speaker"], r["start_ms"]) for r in lines] == [
        (3, "agent", 500), (4, "user", 100)
    ]  # fmt: skip
    assert lines[1]["text"] == "Hi \ufffd there"  # NUL is refused by PostgreSQL: replaced
    (tool,) = changes.events["tool_calls"]
    assert (tool["name"], tool["status"], tool["error"], tool["arguments"]) == (
        "lookup", "error", "boom", {"q": "x"}
    )  # fmt: skip
    usage = changes.events["usage"]
    assert [(u["category"], u["cost_usd"], u["agent_id"]) for u in usage] == [
        ("stt", Decimal("0.006150"), "agent-1"),
        ("llm_input", Decimal("0.002500"), "agent-1"),
        ("tts", Decimal("0.000000"), "agent-1"),
    ]
    assert usage[0]["price_entry"] == "test-1:deepgram/*/stt_seconds@2025-01-01"
    assert usage[2]["price_entry"] == "unpriced" and str(usage[0]["day"]) == "2025-03-01"
    (turn,) = changes.events["turns"]
    assert (turn["end_of_speech_to_first_audio_ms"], turn["stt_final_ms"]) == (800, None)
    (key,) = changes.events["dtmf"]
    assert (key["seq"], key["digit"], key["offset_ms"], key["at"].second) == (12, "#", 9_400, 10)


def test_redelivered_and_older_events_change_nothing() -> None:
    evs = events()
    once = project_calls(evs, {}, CATALOG).calls
    row = next(iter(once.values()))
    again = project_calls(evs + evs, {}, CATALOG).calls
    assert again == once
    assert project_calls(evs, {row["id"]: row}, CATALOG).calls == {}
    # a batch overlapping what is applied folds only the new part
    middle = project_calls(evs[:6], {}, CATALOG).calls[row["id"]]
    assert project_calls(evs[3:], {row["id"]: middle}, CATALOG).calls == once


def test_a_call_first_seen_mid_stream_still_gets_a_row() -> None:
    ev = events()[3]
    row = fold_call(None, ev)
    assert row["status"] == "initiated" and row["agent_id"] is None
    assert row["initiated_at"] == ev.at and row["transcript_count"] == 1
    assert empty_call("x", "s")["total_cost_usd"] == 0


@pytest.mark.parametrize(
    "patch",
    [
        {"type": "call.exploded"},
        {"aggregate_id": "not-a-uuid"},
        {"occurred_at": "2025-03-01T10:00:00"},
        {"data": []},
        {"aggregate_version": 0},
    ],
)
def test_unusable_envelopes_are_refused(patch: dict[str, Any]) -> None:
    with pytest.raises(MalformedEnvelope):
        parse_call_event({**history()[0], **patch})


def test_a_bad_at_falls_back_to_occurred_at() -> None:
    env = history()[1]
    env["data"]["at"] = "yesterday"
    assert parse_call_event(env).at == parse_call_event(env).occurred_at


def test_clickhouse_rows_split_milliseconds_and_round_trip_the_state() -> None:
    changes = project_calls(events(), {}, CATALOG)
    tables = changes_rows(changes)
    (call,) = tables["calls"]
    assert set(call) == set(CALL_COLUMNS)
    assert (call["ended_at"].second, call["ended_at_ms"], call["total_cost_micros"]) == (
        11, 250, 8650
    )  # fmt: skip
    for kind, cols in EVENT_COLUMNS.items():
        assert tables[kind] and all(set(r) == set(cols) for r in tables[kind])
    tool = tables["tool_calls"][0]
    assert (tool["arguments"], tool["result"], tool["at_ms"]) == ('{"q":"x"}', "null", 250)
    assert [u["cost_micros"] for u in tables["usage"]] == [6150, 2500, 0]
    (leg,) = tables["provider_statuses"]
    assert (leg["status"], leg["answered_by"], leg["sip_code"], leg["reason"]) == (
        "in-progress", "human", 200, ""
    )  # fmt: skip
    (key,) = tables["dtmf"]
    assert (key["digit"], key["offset_ms"], key["agent_id"], key["at_ms"]) == (
        "#", 9_400, "agent-1", 250
    )  # fmt: skip
    # what the ClickHouse projector reads back is the state it folds onto
    epoch = {c: call[c] for c in CALL_COLUMNS}
    for name in ("initiated_at", "started_at", "ended_at", "updated_at"):
        epoch[name] = int(call[name].timestamp()) if call[name] else None
    state = call_state(tuple(epoch[c] for c in CALL_COLUMNS))
    row = next(iter(changes.calls.values()))
    same = ["status", "version", "total_cost_usd", "ended_at", "agent_id", "transcript_count"]
    assert {k: state[k] for k in same} == {k: row[k] for k in same}
    assert clickhouse_call_row(state) == call


def test_faust_projection_steps() -> None:
    env = history()[0]
    assert pg_events(env)[0].call_id == env["aggregate_id"]
    assert pg_events({"type": "agent.created"}) == [] and pg_events(None) == []
    rows, evs = ch_events(env)
    assert rows[0]["type"] == "call.initiated" and json.loads(rows[0]["data"])["room_name"]
    assert evs[0].type == "call.initiated" and ch_events(None) == ([], [])
