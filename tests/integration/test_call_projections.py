"""The calls read side on the real stack: the PostgreSQL view (redelivery, rollups, queries),
replay, and the Faust projectors into PostgreSQL and ClickHouse.

Calls are built with the aggregate and saved in an event store of this module's own (no write
side needed); the Faust projector runs as a subprocess (``voxagent projector``) fed with the
envelopes this test produces to ``<prefix>.calls.v1``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from eventsourcing.application import Application

from adapters.kafka.consumer import is_infrastructure
from domain.contract import envelope, iso_ms
from infra.bootstrap import Container, bootstrap, eventsourcing_env
from infra.settings import Settings
from projections import call_queries as q
from projections.calls import is_call_event, parse_call_event
from projections.calls_replay import replay_calls
from projections.calls_view import (
    TABLES,
    CallsRunner,
    Slice,
    apply_call_envelopes,
    apply_call_slices,
    table_names,
)
from projections.pricing import catalog_from_settings
from tests.support.call_stream import AGENTS, OTHER, SPACE, build_calls
from tests.support.databases import isolated
from tests.support.processes import Process, eventually

pytestmark = pytest.mark.integration


class CallStore(Application):
    """Just an event store of Call aggregates (the write side is not under test here)."""

    name = "CallProjectionsTest"


@pytest.fixture(scope="module")
def env(stack_settings: Settings) -> Iterator[dict[str, Any]]:
    """This module's own databases, the calls stored, and their envelopes in store order."""
    with isolated(stack_settings, f"{stack_settings.postgres.database}_calls") as settings:
        container = bootstrap(settings)
        store = CallStore(env=eventsourcing_env(settings))
        calls = build_calls()
        store.save(*calls)
        envs, start = [], None
        while batch := store.recorder.select_notifications(start, 1000, inclusive_of_start=False):
            envs += [envelope(store.mapper.to_domain_event(n), n.id) for n in batch]
            start = batch[-1].id
        catalog = catalog_from_settings(settings)
        CallsRunner(store, container.pool, catalog).run_until_caught_up()
        yield {"container": container, "store": store, "calls": calls, "envs": envs,
               "catalog": catalog}  # fmt: skip
        store.close()
        container.close()


def snapshot(container: Container) -> dict[str, list[tuple[Any, ...]]]:
    with container.pool.connection() as conn:
        return {
            name: conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3, 4, 5").fetchall()
            for name in TABLES.values()
        }


def test_redelivered_and_overlapping_batches_change_nothing(env: dict[str, Any]) -> None:
    container, envs = env["container"], env["envs"]
    before = snapshot(container)
    assert len(before["calls"]) == 8 and before["cost_daily"]
    with container.pool.connection() as conn:
        # the same envelopes again from another source, in overlapping batches of 7
        for n, start in enumerate(range(0, len(envs), 5)):
            changes = apply_call_envelopes(
                conn, envs[start : start + 7], "calls", "redelivered#0", n + 1,
                catalog=env["catalog"],
            )  # fmt: skip
            assert changes is not None and changes.calls == {}
        # and a batch already tracked is skipped as a whole
        assert apply_call_envelopes(conn, envs, "calls", "redelivered#0", 1,
                                    catalog=env["catalog"]) is None  # fmt: skip
    assert snapshot(container) == before


def test_batches_of_several_sources_in_one_transaction_equal_live(env: dict[str, Any]) -> None:
    """The Kafka projector applies every partition of a batch in one transaction: each source's
    tracking record gates its own slice, so a batch where one source was applied already and
    another not applies exactly the new one, and the result equals the live view."""
    container, catalog = env["container"], env["catalog"]
    tables = table_names("_slices")
    events = [parse_call_event(e) for e in env["envs"] if is_call_event(e)]
    sources = sorted({e.call_id for e in events})
    part = {call: f"calls.v1#{sources.index(call) % 3}" for call in sources}  # 3 "partitions"

    def slices(batch: list[Any]) -> list[Slice]:
        by_source: dict[str, list[Any]] = {}
        for event in batch:
            by_source.setdefault(part[event.call_id], []).append(event)
        return [Slice(src, max(e.position for e in evs), evs) for src, evs in by_source.items()]

    batches = [events[i : i + 9] for i in range(0, len(events), 9)]
    with container.pool.connection() as conn:
        for name in tables.values():
            conn.execute(f"CREATE TABLE {name} (LIKE {name.removesuffix('_slices')} INCLUDING ALL)")
        conn.commit()
        try:
            # the call ids are random, so which batches span several sources varies: split the
            # first batch that does (a batch of one source cannot be half-applied)
            split = next(n for n, b in enumerate(batches) if len(slices(b)) > 1)
            for n, batch in enumerate(batches):
                todo = slices(batch)
                if n == split:  # one source of this batch lands first, alone; then all of it
                    apply_call_slices(conn, todo[:1], "calls-slices", catalog=catalog,
                                      tables=tables)  # fmt: skip
                changes = apply_call_slices(conn, todo, "calls-slices", catalog=catalog,
                                            tables=tables)  # fmt: skip
                assert changes is not None and changes.calls
                again = apply_call_slices(conn, todo, "calls-slices", catalog=catalog,
                                          tables=tables)  # fmt: skip
                assert again is None  # redelivered: every source applied already
            for live, rebuilt in zip(TABLES.values(), tables.values(), strict=True):
                got, want = (
                    conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3, 4, 5").fetchall()
                    for name in (rebuilt, live)
                )
                assert got == want, live
        finally:
            conn.rollback()
            for name in tables.values():
                conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute("DELETE FROM projection_tracking WHERE projection = 'calls-slices'")
            conn.commit()


def test_a_failing_write_rolls_the_whole_batch_back_with_its_own_error(
    env: dict[str, Any],
) -> None:
    """The batch's statements are pipelined: a write that fails raises its own error (not a
    connection error, which the consumer runtime would wait out) and nothing of the batch —
    tracking records included — is kept."""
    container, catalog = env["container"], env["catalog"]
    events = [parse_call_event(e) for e in env["envs"] if is_call_event(e)]
    broken = {**TABLES, "transcripts": "no_such_table"}
    before = snapshot(container)
    with container.pool.connection() as conn:
        with pytest.raises(psycopg.errors.UndefinedTable) as raised:
            apply_call_slices(conn, [Slice("broken#0", 5, events), Slice("broken#1", 5, [])],
                              "calls-broken", catalog=catalog, tables=broken)  # fmt: skip
        assert not is_infrastructure(raised.value)
        tracked = conn.execute(
            "SELECT count(*) FROM projection_tracking WHERE projection = 'calls-broken'"
        ).fetchone()
        conn.rollback()
    assert tracked == (0,)
    assert snapshot(container) == before


def test_rollups_equal_the_sum_over_usage_and_the_call_totals(env: dict[str, Any]) -> None:
    with env["container"].pool.connection() as conn:
        by_usage = conn.execute(
            "SELECT space_id, day, agent_id, provider, category, sum(quantity), sum(cost_usd), "
            "count(*) FROM call_usage GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
        ).fetchall()
        rollup = conn.execute(
            "SELECT space_id, day, agent_id, provider, category, quantity, cost_usd, usage_count "
            "FROM cost_daily ORDER BY 1, 2, 3, 4, 5"
        ).fetchall()
        totals = conn.execute(
            "SELECT c.id, c.total_cost_usd, c.usage_count, sum(u.cost_usd), count(u.*) "
            "FROM calls c JOIN call_usage u ON u.call_id = c.id GROUP BY 1, 2, 3"
        ).fetchall()
    assert rollup == by_usage
    assert all(total == summed and n == m for _, total, n, summed, m in totals)
    assert len(totals) == 8 and all(t[1] > 0 for t in totals)


def test_call_rows_and_transcripts_in_spoken_order(env: dict[str, Any]) -> None:
    calls = env["calls"]
    with env["container"].pool.connection() as conn:
        row = q.get_call(conn, SPACE, calls[2].id)
        assert row is not None and row["status"] == "ended"
        assert (row["transfer_mode"], row["transfer_status"]) == ("warm", "completed")
        assert (row["transcript_count"], row["tool_call_count"], row["turn_count"]) == (8, 4, 4)
        assert q.get_call(conn, OTHER, calls[2].id) is None
        assert q.get_call(conn, SPACE, "not-a-uuid") is None
        assert q.call_version(conn, SPACE, calls[2].id) == calls[2].version
        assert q.get_call(conn, SPACE, calls[5].id)["status"] == "in_progress"
        assert q.get_call_by_room(conn, SPACE, "room-3")["id"] == calls[3].id
        assert q.get_call_by_room(conn, OTHER, "room-3") is None
        lines = q.transcripts(conn, SPACE, calls[4].id)
        assert [ln["start_ms"] for ln in lines] == sorted(ln["start_ms"] for ln in lines)
        assert [ln["seq"] for ln in lines] != sorted(ln["seq"] for ln in lines)  # shuffled
        assert lines[0]["speaker"] == "user" and len(lines) == 6
        assert q.transcripts(conn, OTHER, calls[4].id) == []
        keys = q.get_call(conn, SPACE, calls[0].id)["dtmf"]
        assert [(k["digit"], k["offset_ms"]) for k in keys] == [("4", 300), ("2", 450), ("#", 600)]
        assert keys[0]["at"] == datetime(2025, 3, 3, 9, 0, 2, tzinfo=UTC)
        assert row["dtmf"] == [] and q.get_call_by_room(conn, SPACE, "room-6")["dtmf"][1] == {
            "digit": "*", "offset_ms": 450, "at": datetime(2025, 3, 10, 15, 0, 3, tzinfo=UTC)
        }  # fmt: skip
        tools = q.tool_calls(conn, SPACE, calls[0].id)
        assert [t["status"] for t in tools] == ["error", "ok"] and tools[0]["arguments"] == {
            "turn": 0
        }
        assert len(q.turns(conn, SPACE, calls[0].id)) == 2


def test_list_calls_pages_filters_and_totals(env: dict[str, Any]) -> None:
    calls = env["calls"]
    with env["container"].pool.connection() as conn:
        rows, total = q.list_calls(conn, SPACE, limit=3, offset=0)
        assert total == 7 and [r["id"] for r in rows] == [c.id for c in calls[6:3:-1]]
        rows, total = q.list_calls(conn, SPACE, limit=3, offset=6)
        assert total == 7 and [r["id"] for r in rows] == [calls[0].id]
        assert q.list_calls(conn, SPACE, limit=3, offset=9) == ([], 7)
        by_agent = q.list_calls(conn, SPACE, limit=10, offset=0, agent_id=AGENTS[1])
        assert {r["id"] for r in by_agent[0]} == {calls[1].id, calls[3].id, calls[5].id}
        active = q.list_calls(conn, SPACE, limit=10, offset=0, status="in_progress")
        assert [r["id"] for r in active[0]] == [calls[5].id]
        window = q.list_calls(conn, SPACE, limit=10, offset=0, since=date(2025, 3, 4),
                              until=datetime(2025, 3, 6, tzinfo=UTC))  # fmt: skip
        assert [r["id"] for r in window[0]] == [calls[2].id, calls[1].id]
        assert q.list_calls(conn, OTHER, limit=10, offset=0)[1] == 1


def test_cost_breakdown_summary_timeline_and_by_agent(env: dict[str, Any]) -> None:
    calls = env["calls"]
    with env["container"].pool.connection() as conn:
        usage = dict(conn.execute(
            "SELECT category, sum(cost_usd) FROM call_usage WHERE space_id = %s GROUP BY 1",
            (SPACE,)).fetchall())  # fmt: skip
        total = sum(usage.values())
        breakdown = q.cost_breakdown(conn, SPACE, calls[0].id)
        assert breakdown is not None and q.cost_breakdown(conn, OTHER, calls[0].id) is None
        categories = breakdown["categories"].values()
        assert breakdown["total_usd"] == sum(c["cost_usd"] for c in categories)
        assert sum(ln["cost_usd"] for ln in breakdown["lines"]) == breakdown["total_usd"]
        stt = breakdown["categories"]["stt"]
        assert stt["unit"] == "minutes" and stt["quantity"] == Decimal("8.4") / 60
        assert breakdown["categories"]["llm_input"]["quantity"] == 850 + 867
        summary = q.cost_summary(conn, SPACE)
        assert summary["total_usd"] == total and summary["call_count"] == 7
        assert {k: v["cost_usd"] for k, v in summary["by_category"].items()} == usage
        assert {p["provider"] for p in summary["by_provider"]} == {
            "deepgram", "openai", "elevenlabs", "twilio"
        }  # fmt: skip
        assert sum(p["cost_usd"] for p in summary["by_provider"]) == total
        part = q.cost_summary(conn, SPACE, date(2025, 3, 4), date(2025, 3, 6))
        assert part["call_count"] == 2 and 0 < part["total_usd"] < total
        days = q.cost_timeline(conn, SPACE, "day")
        weeks = q.cost_timeline(conn, SPACE, "week")
        months = q.cost_timeline(conn, SPACE, "month")
        assert [d["period"] for d in days] == [date(2025, 3, d) for d in (3, 4, 5, 6, 8, 9, 10)]
        assert [w["period"] for w in weeks] == [date(2025, 3, 3), date(2025, 3, 10)]
        assert [m["period"] for m in months] == [date(2025, 3, 1)]
        assert sum(d["cost_usd"] for d in days) == months[0]["cost_usd"] == total
        agents = q.cost_by_agent(conn, SPACE)
        assert {a["agent_id"] for a in agents} == set(AGENTS)
        assert sum(a["cost_usd"] for a in agents) == total
        assert sorted(a["call_count"] for a in agents) == [3, 4]
        with pytest.raises(ValueError):
            q.cost_timeline(conn, SPACE, "year")  # type: ignore[arg-type]


def test_replay_check_equals_live(env: dict[str, Any]) -> None:
    report = replay_calls(env["container"], app=env["store"], catalog=env["catalog"])
    assert report.events == len(env["envs"]) and report.rows["calls"] == (8, 8)
    assert report.equal, report.differences
    key = "space_id = %s AND day = %s AND agent_id = %s AND provider = %s AND category = %s"
    with env["container"].pool.connection() as conn:
        one = conn.execute("SELECT space_id, day, agent_id, provider, category FROM cost_daily "
                           "ORDER BY 1, 2, 3, 4, 5 LIMIT 1").fetchone()  # fmt: skip
        conn.execute(f"UPDATE cost_daily SET cost_usd = cost_usd + 1 WHERE {key}", one)
        conn.commit()
        try:
            broken = replay_calls(env["container"], app=env["store"], catalog=env["catalog"])
            assert broken.differences == {"cost_daily": (1, 1)}
        finally:
            conn.execute(f"UPDATE cost_daily SET cost_usd = cost_usd - 1 WHERE {key}", one)
            conn.commit()
    assert replay_calls(env["container"], app=env["store"], catalog=env["catalog"]).equal


def _names(container: Container) -> dict[str, set[str]]:
    """Every calls table's index and constraint names."""
    with container.pool.connection() as conn:
        return {
            table: {
                r[0]
                for r in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = %s UNION "
                    "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass",
                    (table, table),
                )
            }  # fmt: skip
            for table in TABLES.values()
        }


def test_replay_swaps_every_calls_table_while_calls_keep_coming(stack_settings: Settings) -> None:
    with isolated(stack_settings, f"{stack_settings.postgres.database}_callsswap") as settings:
        container = bootstrap(settings)
        store = CallStore(env=eventsourcing_env(settings))
        catalog = catalog_from_settings(settings)
        try:
            _swap_while_writing(container, store, catalog)
        finally:
            store.close()
            container.close()


def _swap_while_writing(container: Container, store: CallStore, catalog: Any) -> None:
    store.save(*build_calls())
    runner = CallsRunner(store, container.pool, catalog, batch_size=50)
    runner.run_until_caught_up()
    before = replay_calls(container, app=store, catalog=catalog)
    assert before.equal and before.rows["calls"] == (8, 8), before.differences
    names = _names(container)
    stop, errors = threading.Event(), []
    ongoing = build_calls(seed=99)[5]  # in progress: it keeps talking and using during the swap

    def keep_writing() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                at = iso_ms(datetime.now(UTC))
                ongoing.add_transcript(
                    turn_id=f"w{n}",
                    speaker="user",
                    text=f"more {n}",
                    start_ms=100_000 + n,
                    end_ms=100_001 + n,
                    at=at,
                )
                ongoing.record_usage(
                    provider="openai",
                    model="gpt-4o-mini",
                    kind="llm_input_tokens",
                    quantity=10 + n,
                    at=at,
                )
                store.save(ongoing, *(build_calls(seed=n)[:2] if n % 3 == 0 else ()))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    writer = threading.Thread(target=keep_writing)
    with runner:  # the live projector keeps applying during the swap
        writer.start()
        time.sleep(0.3)
        report = replay_calls(container, app=store, catalog=catalog, check_only=False)
        time.sleep(0.3)
        stop.set()
        writer.join()
        head = store.recorder.max_notification_id()
        eventually(lambda: runner.position() == head, timeout=60, what="the live runner")
    assert not errors and runner.error is None, (errors, runner.error)
    assert report.swapped and report.events > 0
    assert _names(container) == names
    after = replay_calls(container, app=store, catalog=catalog)
    assert after.equal, after.differences
    kinds: dict[str, int] = {}
    start = None
    while batch := store.recorder.select_notifications(start, 1000, inclusive_of_start=False):
        for n in batch:
            topic = type(store.mapper.to_domain_event(n)).TOPIC
            kinds[topic] = kinds.get(topic, 0) + 1
        start = batch[-1].id
    with container.pool.connection() as conn:
        count = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES.values()
        }
        sums = conn.execute(
            "SELECT (SELECT sum(cost_usd) FROM call_usage), (SELECT sum(cost_usd) FROM cost_daily),"
            " (SELECT count(*) FROM call_usage), (SELECT sum(usage_count) FROM cost_daily),"
            " (SELECT sum(total_cost_usd) FROM calls), (SELECT sum(quantity) FROM call_usage),"
            " (SELECT sum(quantity) FROM cost_daily)"
        ).fetchone()
    assert sums[0] == sums[1] == sums[4] and sums[2] == sums[3] and sums[5] == sums[6]
    assert count["calls"] == kinds["call.initiated"] > 8
    assert count["call_usage"] == kinds["call.usage_recorded"] == after.rows["usage"][0]
    assert count["call_transcripts"] == kinds["call.transcript_added"]
    assert count["call_tool_calls"] == kinds["call.tool_invoked"]
    assert count["call_turns"] == kinds["call.turn_metrics_recorded"]
    assert count["call_dtmf"] == kinds["call.dtmf_received"] > 0


# -- the Faust projectors ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def faust(
    stack_settings: Settings, env: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Databases of their own, the calls topics, and ``voxagent projector`` running on them."""
    from adapters.kafka.topics import domain_topics, ensure_topics

    name = f"{stack_settings.postgres.database}_callsfaust"
    with isolated(stack_settings, name) as settings:
        ensure_topics(settings, domain_topics(settings))
        proc = Process("projector", settings, Path(tmp_path_factory.mktemp("calls-faust")))
        proc.start()
        container = bootstrap(settings)
        try:
            yield {"settings": settings, "container": container, "process": proc}
        finally:
            proc.stop()
            container.close()


def produce(settings: Settings, envs: list[dict[str, Any]], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
    topic = f"{settings.topic_prefix}.calls.v1"
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "linger.ms": 5})
    for message in raw:
        producer.produce(topic, message, key=b"malformed")
    for e in envs:
        producer.produce(topic, json.dumps(e).encode(), key=e["aggregate_id"].encode())
    assert producer.flush(30) == 0


def pg_totals(container: Container) -> dict[str, tuple[int, int]]:
    with container.pool.connection() as conn:
        rows = conn.execute(
            "SELECT id::text, version, (total_cost_usd * 1000000)::bigint FROM calls"
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_faust_projects_calls_into_postgres_and_clickhouse_alike(
    env: dict[str, Any], faust: dict[str, Any]
) -> None:
    settings, container = faust["settings"], faust["container"]
    envs = env["envs"]
    produce(settings, envs[:40], raw=[b"{not json", json.dumps({"type": "call.started"}).encode()])
    produce(settings, envs)  # the first 40 twice: a relay re-publishing after a crash
    expected = pg_totals(env["container"])  # what the in-process view made of the same events
    eventually(lambda: pg_totals(container) == expected, timeout=120,
               what="the Faust calls read model", processes=(faust["process"],))  # fmt: skip
    assert snapshot(container) == snapshot(env["container"])
    client = container.clickhouse()

    def ch_totals() -> dict[str, tuple[int, int]]:
        rows = client.execute("SELECT call_id, version, total_cost_micros FROM calls FINAL")
        return {r[0]: (r[1], r[2]) for r in rows}

    eventually(lambda: ch_totals() == expected, timeout=60, what="ClickHouse calls")
    usage = client.execute("SELECT count(), sum(cost_micros) FROM usage FINAL")[0]
    with container.pool.connection() as conn:
        pg_usage = conn.execute(
            "SELECT count(*), (sum(cost_usd) * 1000000)::bigint FROM call_usage"
        ).fetchone()
    assert tuple(usage) == tuple(pg_usage)
    for table, pg_table in (("transcripts", "call_transcripts"), ("turns", "call_turns"),
                            ("tool_calls", "call_tool_calls"), ("dtmf", "call_dtmf")):  # fmt: skip
        (n,) = client.execute(f"SELECT count() FROM {table} FINAL")[0]
        with container.pool.connection() as conn:
            assert n == conn.execute(f"SELECT count(*) FROM {pg_table}").fetchone()[0]
    (events,) = client.execute("SELECT uniqExact(event_id) FROM events")[0]
    assert events == len(envs)
    client.disconnect()
