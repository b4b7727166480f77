"""Simulated worker signals -> ingest -> calls event store -> relay -> projectors: the API
returns their transcripts, costs, timelines and key presses, and ClickHouse has the same as
Postgres."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from agent.signals import SignalEmitter, worker_producer
from infra.simulate import simulate_calls
from tests.support.processes import eventually

pytestmark = pytest.mark.integration


def clickhouse(container, sql, **params):
    """The rows of one query on the pipeline's ClickHouse."""
    ch = container.clickhouse()
    try:
        return ch.execute(sql, params)
    finally:
        ch.disconnect()


def test_simulated_calls_reach_the_api_and_clickhouse_with_equal_totals(
    client, issuer, api_container, pipeline_settings, pipeline
):
    sp = f"sim-{uuid.uuid4().hex[:8]}"
    h = issuer.headers(sp)
    agent_id = client.post("/api/agents", json={"name": "Sim"}, headers=h).json()["id"]
    summary = simulate_calls(
        pipeline_settings, calls=12, concurrency=4, space_id=sp, agent_id=uuid.UUID(agent_id),
        seed=7,
    )  # fmt: skip
    assert summary.calls == 12 and summary.signals > 12 * 5

    def all_ended():
        page = client.get("/api/sessions", params={"limit": 50}, headers=h).json()
        return page["total"] == 12 and all(s["status"] == "ended" for s in page["items"])

    eventually(all_ended, timeout=120, what="12 ended sessions", processes=tuple(pipeline.values()))
    page = client.get("/api/sessions", params={"limit": 50}, headers=h).json()
    assert {s["id"] for s in page["items"]} == {str(c) for c in summary.call_ids}
    longest = max(page["items"], key=lambda s: s["transcript_count"])
    transcripts = client.get(f"/api/sessions/{longest['id']}/transcripts", headers=h).json()
    assert len(transcripts) == longest["transcript_count"] > 0
    assert [t["start_ms"] for t in transcripts] == sorted(t["start_ms"] for t in transcripts)
    assert {t["speaker"] for t in transcripts} == {"user", "agent"}

    summary_pg = client.get("/api/costs/summary", headers=h).json()
    per_call = sum(Decimal(str(s["total_cost_usd"])) for s in page["items"])
    assert Decimal(str(summary_pg["total_usd"])) == per_call > 0
    timeline = client.get("/api/costs/timeline", headers=h).json()["points"]
    assert sum(Decimal(str(p["cost_usd"])) for p in timeline) == per_call

    def clickhouse_totals():
        calls = clickhouse(
            api_container,
            "SELECT count(), sum(total_cost_micros), sum(transcript_count) "
            "FROM calls FINAL WHERE space_id = %(sp)s AND status = 'ended'",
            sp=sp,
        )[0]
        usage = clickhouse(
            api_container, "SELECT sum(cost_micros) FROM usage FINAL WHERE space_id = %(sp)s", sp=sp
        )[0][0]
        return (calls, usage) if calls[0] == 12 else None

    (count, call_micros, transcripts_ch), usage_micros = eventually(
        clickhouse_totals, timeout=120, what="12 ended calls in ClickHouse"
    )
    assert Decimal(call_micros) / 10**6 == per_call == Decimal(usage_micros) / 10**6
    assert transcripts_ch == sum(s["transcript_count"] for s in page["items"])


def test_a_callers_key_presses_reach_the_session_and_clickhouse_in_order(
    client, issuer, api_container, pipeline_settings, pipeline
):
    """The worker's ``call.dtmf`` signals on Kafka -> ingest -> relay -> projectors: the session
    lists the keys in the order pressed, once each, and ClickHouse has the same."""
    sp = f"keys-{uuid.uuid4().hex[:8]}"
    h = issuer.headers(sp)
    agent_id = client.post("/api/agents", json={"name": "IVR"}, headers=h).json()["id"]
    body = {"agent_id": agent_id, "direction": "inbound", "channel": "twilio_sip"}
    sid = client.post("/api/sessions", json=body, headers=h).json()["id"]
    topic = f"{pipeline_settings.topic_prefix}.ingress.worker.v1"
    producer = worker_producer(pipeline_settings)
    emitter = SignalEmitter(producer, topic, space_id=sp, call_id=sid, job_id="AJ_keypresses01")
    emitter.started()
    for digit, offset_ms in (("4", 1200), ("2", 1450), ("#", 1700)):
        emitter.dtmf(digit, offset_ms)
    resent = json.dumps(emitter.emitted[-1]).encode()  # the '#' again: a duplicate
    producer.produce(topic, resent, sid.encode())
    emitter.ended("hangup", 2500)
    assert producer.flush(30) == 0

    def ended():
        resp = client.get(f"/api/sessions/{sid}", headers=h)
        return resp.json() if resp.status_code == 200 and resp.json()["status"] == "ended" else None

    session = eventually(ended, timeout=120, what="the ended session",
                         processes=tuple(pipeline.values()))  # fmt: skip
    pressed = [("4", 1200), ("2", 1450), ("#", 1700)]
    assert [(k["digit"], k["offset_ms"]) for k in session["dtmf"]] == pressed
    assert session["version"] == 6  # initiated, started, three keys, ended
    assert client.get("/api/sessions", headers=h).json()["items"][0]["dtmf"] is None

    def clickhouse_keys():
        rows = clickhouse(
            api_container,
            "SELECT digit, offset_ms FROM dtmf FINAL WHERE call_id = %(c)s ORDER BY offset_ms, seq",
            c=sid,
        )
        return rows if len(rows) >= 3 else None

    keys = eventually(clickhouse_keys, timeout=120, what="the key presses in ClickHouse")
    assert [tuple(r) for r in keys] == pressed
