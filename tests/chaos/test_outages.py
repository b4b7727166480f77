"""Outages lose nothing (issue 11): under steady load -- agents created over HTTP, simulated
calls in real time, webhooks -- Kafka, PostgreSQL and ClickHouse are stopped in turn, then every
platform process is killed with -9 and restarted. Every acknowledged command and signal lands
once in the event store, the read models, ClickHouse and the webhook receiver; the read models
equal a replay; ``/health`` names what is down; writes answer 503 (never 500, never a hang)
while PostgreSQL is away.

It runs on a stack of its own (``tests.support.chaos``), so the shared local stack and a running
platform are never stopped. The outages are shorter than ``bench/chaos.py``'s (the benchmark
measures recovery; this test checks that nothing is lost)."""

from __future__ import annotations

import pytest

from infra.settings import Settings
from tests.support.chaos import PROCESSES, ChaosRun, Plan

# the module fixture runs the whole chaos run (~2.5 min here) inside the first test's timeout
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    plan = Plan(
        warmup=5.0,
        outages=(("kafka", 8.0), ("postgres", 8.0), ("clickhouse", 10.0)),
        kills=PROCESSES,
        agents_per_second=4.0,
        concurrent_calls=8,
        echo=lambda line: print(line, flush=True),
    )
    with ChaosRun(Settings(), plan, tmp_path_factory.mktemp("chaos")).running() as run:
        yield run.run()


def test_no_acknowledged_command_or_signal_is_lost(report):
    assert report.commands["acknowledged"] > 0 and report.signals["acknowledged"] > 0
    assert report.signals["failed"] == 0
    assert report.lost == dict.fromkeys(report.lost, 0)


def test_nothing_is_applied_twice(report):
    assert report.duplicated == dict.fromkeys(report.duplicated, 0)


def test_the_read_models_equal_a_replay_afterwards(report):
    assert report.replay_equal == {"agents": True, "calls": True}


def test_every_step_recovers(report):
    assert [s.name for s in report.steps if s.recovered is None] == []


def test_health_names_each_service_while_it_is_down(report):
    named = {s.name: s.health_named_down for s in report.steps if s.health_named_down is not None}
    assert named and all(named.values()), named


def test_writes_answer_503_while_postgres_is_down_never_500_or_a_hang(report):
    (pg,) = [s for s in report.steps if s.name.startswith("postgres")]
    assert pg.statuses_while_down.get(503, 0) > 0, pg.statuses_while_down
    assert report.commands["statuses"].get(500, 0) == 0
    assert report.commands["hangs"] == 0
