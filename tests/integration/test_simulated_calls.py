"""Simulated worker signals -> ingest -> calls event store -> relay -> projectors: the API
returns their transcripts, costs and timelines, and ClickHouse has the same totals as Postgres."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from infra.simulate import simulate_calls
from tests.support.processes import eventually

pytestmark = pytest.mark.integration


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
        ch = api_container.clickhouse()
        try:
            calls = ch.execute(
                "SELECT count(), sum(total_cost_micros), sum(transcript_count) "
                "FROM calls FINAL WHERE space_id = %(sp)s AND status = 'ended'",
                {"sp": sp},
            )[0]
            usage = ch.execute(
                "SELECT sum(cost_micros) FROM usage FINAL WHERE space_id = %(sp)s", {"sp": sp}
            )[0][0]
        finally:
            ch.disconnect()
        return (calls, usage) if calls[0] == 12 else None

    (count, call_micros, transcripts_ch), usage_micros = eventually(
        clickhouse_totals, timeout=120, what="12 ended calls in ClickHouse"
    )
    assert Decimal(call_micros) / 10**6 == per_call == Decimal(usage_micros) / 10**6
    assert transcripts_ch == sum(s["transcript_count"] for s in page["items"])
