"""The analytics DDL and analyst queries give the same answers on the stack's ClickHouse (18.16)
and on current ClickHouse (chDB), for the same rows written by the real projectors."""

from __future__ import annotations

import csv
import functools
import io
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import chdb.session
import pytest

from adapters.clickhouse.client import connect
from adapters.clickhouse.writer import insert_rows
from domain.agent_config import AgentConfig
from domain.agents import VoiceAgent
from domain.contract import envelope, iso_ms
from infra.migrations import clickhouse_statements
from infra.settings import REPO_ROOT, Settings
from projections.calls import parse_call_event, project_calls
from projections.calls_clickhouse import CALL_COLUMNS as CH_CALL_COLUMNS
from projections.calls_clickhouse import EVENT_COLUMNS as CH_CALL_EVENT_COLUMNS
from projections.calls_clickhouse import changes_rows
from projections.clickhouse_rows import (
    AGENT_COLUMNS,
    EVENT_COLUMNS,
    clickhouse_agent_row,
    clickhouse_event_row,
)
from projections.numbers import (
    CLICKHOUSE_NUMBER_COLUMNS,
    CLICKHOUSE_REFUSED_CALL_COLUMNS,
    clickhouse_number_row,
    clickhouse_refused_call_row,
)
from projections.pricing import catalog_from_settings
from tests.support.call_stream import build_calls

pytestmark = pytest.mark.integration

Query = Callable[[str], list[tuple[str, ...]]]


def documented_queries() -> dict[str, str]:
    """The example queries of docs/analytics.md (``-- name:`` blocks), the database name
    replaced by a placeholder so each engine runs them in its own database."""
    doc = (REPO_ROOT / "docs" / "analytics.md").read_text()
    queries = {}
    for block in re.findall(r"```sql\n(.*?)```", doc, flags=re.DOTALL):
        first, _, body = block.partition("\n")
        name = first.removeprefix("-- name:").strip()
        queries[name] = body.replace("voxagent.", "{db}.")
    return queries


QUERIES = documented_queries()


@functools.cache
def sample_envelopes() -> list[dict[str, Any]]:
    """Agents over several days: created, updated (some twice), one archived. Built once, so
    both engines get the very same rows."""
    envs: list[dict[str, Any]] = []
    start = datetime(2025, 1, 30, 22, 0, 0, 123000, tzinfo=UTC)
    for i in range(4):
        agent = VoiceAgent.create(f"space-{i % 2}", AgentConfig(name=f"agent {i}"), "alice")
        for n in range(i):
            agent.update({"llm": {"provider": ["openai", "groq", "scripted"][n % 3]}}, "bob")
        if i == 3:
            agent.archive("carol")
        for event in agent.collect_events():
            env = envelope(event, len(envs) + 1)
            env["occurred_at"] = iso_ms(
                start + timedelta(hours=7 * len(envs), milliseconds=len(envs))
            )
            envs.append(env)
    return envs


@functools.cache
def call_tables() -> dict[str, list[dict[str, Any]]]:
    """ClickHouse rows of a realistic call stream, as a projector taking one event per batch
    inserts them: every intermediate ``calls`` row (latest version must win), every event row."""
    catalog = catalog_from_settings(Settings())
    tables: dict[str, list[dict[str, Any]]] = {}
    state: dict[str, dict[str, Any]] = {}
    for call in build_calls():
        for position, event in enumerate(call.collect_events(), start=1000):
            changes = project_calls([parse_call_event(envelope(event, position))], state, catalog)
            state.update(changes.calls)
            for table, rows in changes_rows(changes).items():
                tables.setdefault(table, []).extend(rows)
    return tables


def number_envelopes() -> list[dict[str, Any]]:
    """The number the sample calls dialed (``+1555``) in both spaces of the calls: provisioned,
    then assigned (the latest version must win), and released in the other space."""
    from tests.support.call_stream import OTHER, SPACE

    envs = []
    at = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    for n, (space, kinds) in enumerate(((SPACE, ("provisioned", "assigned")),
                                        (OTHER, ("provisioned", "released")))):  # fmt: skip
        number_id = str(uuid.UUID(int=n + 1))
        for version, kind in enumerate(kinds, start=1):
            envs.append({
                "event_id": str(uuid.uuid4()), "type": f"number.{kind}", "schema_version": 1,
                "space_id": space, "aggregate_id": number_id, "aggregate_version": version,
                "position": 500 + len(envs), "occurred_at": iso_ms(at + timedelta(hours=version)),
                "data": {
                    "e164": "+1555", "provider": "twilio", "provider_id": f"PN{n}",
                    "capabilities": ["voice"], "outbound_agent_id": None, "trunk_id": None,
                    "inbound_agent_id": str(uuid.UUID(int=9)) if kind == "assigned" else None,
                    "status": "released" if kind == "released" else "active", "actor": "a",
                },
            })  # fmt: skip
    return envs


def refusal_envelopes() -> list[dict[str, Any]]:
    """Calls refused at the numbers of ``number_envelopes``: two at the first space's, one at
    the number the other space released."""
    from domain.contract import envelope
    from domain.refused_calls import RefusedCall
    from tests.support.call_stream import OTHER, SPACE

    cases = [(SPACE, 1, "number_unassigned", "+15550001"), (SPACE, 1, "agent_unavailable", None),
             (OTHER, 2, "number_released", "+15550002")]  # fmt: skip
    return [
        envelope(RefusedCall.record(
            space_id=space, number_id=uuid.UUID(int=n), e164="+1555", provider="twilio",
            caller=caller, reason=reason, provider_call_id=f"CA{i}",
            at=iso_ms(datetime(2025, 3, 2, 9, i, tzinfo=UTC)),
        ).collect_events()[0], 600 + i)
        for i, (space, n, reason, caller) in enumerate(cases)
    ]  # fmt: skip


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, datetime):
        return str(int(value.timestamp()))
    return repr(value)


def values_insert(table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    body = ", ".join("(" + ", ".join(literal(r[c]) for c in columns) + ")" for r in rows)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {body}"


def load(
    execute: Callable[[str], Any],
    insert: Callable[[str, tuple[str, ...], list[dict[str, Any]]], None],
    db: str,
) -> None:
    """Create the schema, then insert every row twice plus nothing else (dedup must hold)."""
    for statement in clickhouse_statements(db):
        execute(statement)
    envs = sample_envelopes()
    events = [clickhouse_event_row(e) for e in envs]
    agents = [clickhouse_agent_row(e) for e in envs]
    numbers = [clickhouse_number_row(e) for e in number_envelopes()]
    refused = [clickhouse_refused_call_row(e) for e in refusal_envelopes()]
    for _ in range(2):  # a redelivered batch: duplicates are harmless
        insert(f"{db}.events", EVENT_COLUMNS, events)
        insert(f"{db}.agents", AGENT_COLUMNS, agents)
        insert(f"{db}.numbers", CLICKHOUSE_NUMBER_COLUMNS, numbers)
        insert(f"{db}.refused_calls", CLICKHOUSE_REFUSED_CALL_COLUMNS, refused)
        for table, rows in call_tables().items():
            columns = CH_CALL_COLUMNS if table == "calls" else CH_CALL_EVENT_COLUMNS[table]
            if rows:  # the sample stream has no phone-leg statuses
                insert(f"{db}.{table}", columns, rows)


@pytest.fixture(scope="module")
def server(stack_settings: Settings) -> Iterator[Query]:
    db = f"{stack_settings.clickhouse.database}_sql"
    client = connect(stack_settings.clickhouse, database="default")
    client.execute(f"CREATE DATABASE IF NOT EXISTS {db}")

    def insert(table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        insert_rows(client, table, rows, columns=columns)

    load(client.execute, insert, db)
    yield lambda sql: [tuple(str(v) for v in row) for row in client.execute(sql.format(db=db))]
    client.execute(f"DROP DATABASE IF EXISTS {db}")
    client.disconnect()


@pytest.fixture(scope="module")
def chdb_session() -> Iterator[Query]:
    session = chdb.session.Session()
    db = f"analytics_{uuid.uuid4().hex[:8]}"
    session.query(f"CREATE DATABASE IF NOT EXISTS {db}")

    def insert(table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        session.query(values_insert(table, columns, rows))

    load(session.query, insert, db)

    def query(sql: str) -> list[tuple[str, ...]]:
        text = session.query(sql.format(db=db), "CSV").bytes().decode()
        return [tuple(row) for row in csv.reader(io.StringIO(text))]

    yield query
    session.close()


def test_server_and_chdb_run_the_same_schema(server: Query, chdb_session: Query) -> None:
    sql = "SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"
    tables = ["agents", "calls", "dtmf", "events", "numbers", "provider_statuses", "refused_calls"]
    tables += ["tool_calls", "transcripts", "turns", "usage"]
    assert server(sql) == chdb_session(sql) == [(t,) for t in tables]


@pytest.mark.parametrize("name", list(QUERIES))
def test_analyst_query_gives_the_same_answer_on_both(
    name: str, server: Query, chdb_session: Query
) -> None:
    on_server, on_chdb = server(QUERIES[name]), chdb_session(QUERIES[name])
    assert on_server, f"{name}: no rows"
    assert on_server == on_chdb


def test_latest_config_reflects_the_last_version_of_each_agent(server: Query) -> None:
    latest = server(QUERIES["latest config per agent (argMax)"])
    assert sorted((r[2], r[3], r[4]) for r in latest) == [
        ("groq", "3", "0"),
        ("openai", "2", "0"),
        ("scripted", "1", "0"),
        ("scripted", "5", "1"),
    ]
    final = server(QUERIES["latest config per agent (FINAL)"])
    assert [(r[0], r[1], r[2], r[4]) for r in final] == [(r[0], r[1], r[2], r[4]) for r in latest]
    per_day = server(QUERIES["events per type per day"])
    assert sum(int(r[2]) for r in per_day) == len(sample_envelopes()) == 11


def test_call_queries_see_each_call_once_at_its_latest_version(server: Query) -> None:
    per_day = server(QUERIES["calls and minutes per day per agent"])
    assert sum(int(r[2]) for r in per_day) == 8
    statuses = dict(server(QUERIES["calls per status (argMax)"]))
    assert statuses == {"ended": "7", "in_progress": "1"}
    longest = server(QUERIES["longest calls"])
    assert [int(r[2]) for r in longest] == [67_000, 66_000, 64_000, 63_000, 62_000]
    usage = call_tables()["usage"]
    by_week = server(QUERIES["cost by provider per week"])
    assert sum(int(r[2]) for r in by_week) == sum(u["cost_micros"] for u in usage) > 0
    assert sum(int(r[3]) for r in by_week) == len(usage)
    lines = server(QUERIES["a call's transcript in spoken order"])
    assert [int(r[1]) for r in lines] == sorted(int(r[1]) for r in lines) and len(lines) == 6
    keys = server(QUERIES["key presses per agent and key"])
    assert sum(int(r[2]) for r in keys) == len(call_tables()["dtmf"]) == 6
    assert {r[1] for r in keys} == {"0", "1", "2", "4", "*", "#"}


def test_calls_per_number_counts_the_inbound_calls_of_the_number_in_their_space(
    server: Query,
) -> None:
    inbound = [r for r in call_tables()["calls"] if r["direction"] == "inbound"]
    calls = {r["call_id"] for r in inbound if r["space_id"] == "space-calls"}
    rows = server(QUERIES["inbound calls per number"])
    assert [(r[0], r[1], int(r[2])) for r in rows] == [("+1555", "twilio", len(calls))]
    assert len(calls) == 3
    latest = server("SELECT status, inbound_agent_id FROM {db}.numbers FINAL ORDER BY space_id")
    assert latest == [("active", str(uuid.UUID(int=9))), ("released", "")]


def test_the_analytics_doc_holds_the_example_queries() -> None:
    assert len(QUERIES) >= 14 and all("SELECT" in q and "{db}." in q for q in QUERIES.values())


def test_refused_calls_inserted_twice_count_once(server: Query) -> None:
    from tests.support.call_stream import OTHER, SPACE

    rows = server(QUERIES["refused calls per number and reason"])
    assert sorted(rows) == sorted([
        (SPACE, "+1555", "agent_unavailable", "1"), (SPACE, "+1555", "number_unassigned", "1"),
        (OTHER, "+1555", "number_released", "1"),
    ])  # fmt: skip
