"""Chaos runs (issue 11): the whole platform on a stack of its own, under steady load, while its
services are stopped and its processes killed -- then what was lost, what was applied twice, how
fast it recovered.

The stack (PostgreSQL, ClickHouse, Kafka) runs from ``<stack root>/chaos`` on ports of its own,
so stopping its services never touches the local stack that other tests, benchmarks or a running
``make up`` use. The platform's processes (API, relay, projectors, ingest, webhook dispatcher and
sender) run as real subprocesses. The load is the product's three flows at once:

- **commands**: agents created over HTTP at a steady rate; a 503 or a dropped connection is
  retried with the same Idempotency-Key, as a client should; only a 201 counts as acknowledged;
- **signals**: simulated calls (``infra.simulate.plan_call``) in real time onto the ingress
  topic; a signal counts once the broker acknowledged it;
- **webhooks**: one endpoint subscribed to ``agent.*`` on a local receiver.

Afterwards: every acknowledged agent is in the read model, in ClickHouse and was delivered as a
webhook; every acknowledged signal is exactly one event of its call, in the event store, the
read model and ClickHouse; ``voxagent replay agents|calls --check`` finds the live read models
equal to a rebuild. Used by ``tests/chaos`` (short outages) and ``bench/chaos.py`` (the issue's).
"""

from __future__ import annotations

import heapq
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from adapters.kafka.producer import build_producer
from adapters.kafka.topics import domain_topics, ensure_topics
from commands.signals import iso_ms
from infra.settings import REPO_ROOT, Settings
from infra.simulate import plan_call
from infra.stack import manager
from infra.stack.common import StackError
from tests.support.databases import isolated
from tests.support.jwt import JwksServer
from tests.support.processes import Process, settings_env
from tests.support.receiver import Receiver

SERVICES = ("kafka", "postgres", "clickhouse")
PROCESSES = ("api", "relay", "projector", "ingest", "webhooks dispatch", "webhooks send")
SPACE = "chaos"


@dataclass
class Plan:
    """What a run does. Durations in seconds."""

    warmup: float = 10.0
    outages: tuple[tuple[str, float], ...] = (("kafka", 30), ("postgres", 30), ("clickhouse", 60))
    kills: tuple[str, ...] = PROCESSES
    agents_per_second: float = 5.0
    concurrent_calls: int = 10
    recover_timeout: float = 180.0
    echo: Callable[[str], None] = print


def chaos_settings(base: Settings) -> Settings:
    """The chaos stack's own folder and ports (never those of the local stack)."""
    return base.model_copy(
        update={
            "environment": "test",
            "stack": base.stack.model_copy(update={"root": base.stack.root / "chaos"}),
            "postgres": base.postgres.model_copy(update={"port": 55442}),
            "kafka": base.kafka.model_copy(
                update={"bootstrap": "127.0.0.1:59192", "controller_port": 59193}
            ),
            "clickhouse": base.clickhouse.model_copy(update={"port": 59010, "http_port": 58133}),
            "api": base.api.model_copy(update={"port": 8010}),
        }
    )


def child_env(settings: Settings, issuer: JwksServer) -> dict[str, str]:
    """What a platform process needs beyond ``settings_env``: the chaos ports, the test issuer,
    and permission to deliver webhooks to the loopback receiver."""
    return {
        "VOXAGENT_POSTGRES__PORT": str(settings.postgres.port),
        "VOXAGENT_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "VOXAGENT_CLICKHOUSE__PORT": str(settings.clickhouse.port),
        "VOXAGENT_CLICKHOUSE__HTTP_PORT": str(settings.clickhouse.http_port),
        "VOXAGENT_API__PORT": str(settings.api.port),
        "VOXAGENT_AUTH__JWKS_URL": issuer.url,
        "VOXAGENT_AUTH__ISSUER": issuer.issuer,
        "VOXAGENT_AUTH__AUDIENCE": issuer.audience,
        "VOXAGENT_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.1/32"]',
    }


# -- the load ----------------------------------------------------------------------------------
@dataclass
class CommandLoad:
    """Creates agents over HTTP at a steady rate; retries refusals with the same key."""

    base_url: str
    headers: dict[str, str]
    rate: float
    acked: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    unavailable: int = 0  # connection refused/reset: the API process was away
    hangs: int = 0  # no answer within the client's timeout
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=15.0) as http:
            index = 0
            while not self.stop.is_set():
                began = time.monotonic()
                self._create(http, index)
                index += 1
                self.stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - began)))

    def _create(self, http: httpx.Client, index: int) -> None:
        key = str(uuid.uuid4())
        body = {"name": f"chaos {index}", "system_prompt": "You help.", "first_message": "Hi"}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                response = http.post("/api/agents", json=body, headers={"Idempotency-Key": key})
            except httpx.TimeoutException:
                self.hangs += 1
            except httpx.TransportError:
                self.unavailable += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code == 201:
                    self.acked.append(response.json()["id"])
                    return
                if response.status_code not in (503, 429):
                    return  # a 4xx/500 is not retried: counted, and the run fails on it
            time.sleep(0.5)


class SignalLoad:
    """Keeps ``concurrency`` simulated calls in flight, in real time; counts acknowledged
    signals per call (every signal is one event of its call)."""

    def __init__(self, settings: Settings, agent_id: str, concurrency: int) -> None:
        self.settings, self.agent_id, self.concurrency = settings, agent_id, concurrency
        self.acked: dict[str, int] = defaultdict(int)
        self.failed = 0
        self.produced = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def acked_total(self) -> int:
        with self.lock:
            return sum(self.acked.values())

    def run(self) -> None:
        quiet = logging.getLogger("voxagent.chaos.librdkafka")  # its broker-down lines are
        quiet.setLevel(logging.CRITICAL)  # the point of the run, not news
        producer = build_producer(self.settings, **{"message.timeout.ms": 600_000, "logger": quiet})
        topic = f"{self.settings.topic_prefix}.ingress.worker.v1"
        start, began = datetime.now(UTC), time.monotonic()
        queue: list[tuple[float, int, dict[str, Any]]] = []
        launched = 0

        def launch(at: float) -> None:
            nonlocal launched
            steps = plan_call(launched, seed=11, space_id=SPACE, agent_id=uuid.UUID(self.agent_id))
            for n, step in enumerate(steps):
                heapq.heappush(queue, (at + step.offset, launched * 1000 + n, step.data))
            launched += 1

        for _ in range(self.concurrency):
            launch(0.0)
        while not self.stop.is_set():
            due, _, data = heapq.heappop(queue)
            self.stop.wait(max(0.0, began + due - time.monotonic()))
            if self.stop.is_set():
                break
            data = {**data, "at": iso_ms(start + timedelta(seconds=due))}
            call_id = data["call_id"]

            def on_delivery(err: Any, _msg: Any, call_id: str = call_id) -> None:
                with self.lock:
                    if err is None:
                        self.acked[call_id] += 1
                    else:
                        self.failed += 1

            value = json.dumps(data, separators=(",", ":")).encode()
            while True:
                try:
                    producer.produce(topic, value, call_id.encode(), on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            self.produced += 1
            producer.poll(0)
            if data["type"] == "call.ended":
                launch(due + 0.5)
        producer.flush(600)


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Step:
    name: str
    began: float
    restored: float = 0.0
    recovered: float | None = None
    peak_backlog: int = 0
    peak_at: float = 0.0
    health_named_down: bool | None = None
    health_slowest_s: float = 0.0
    statuses_while_down: dict[int, int] = field(default_factory=dict)


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)
    duplicated: dict[str, int] = field(default_factory=dict)
    replay_equal: dict[str, bool] = field(default_factory=dict)
    offered_per_s: float = 0.0
    commands: dict[str, Any] = field(default_factory=dict)
    signals: dict[str, int] = field(default_factory=dict)
    webhook_redeliveries: int = 0

    def figures(self) -> dict[str, Any]:
        recoveries = [s.recovered - s.restored for s in self.steps if s.recovered is not None]
        ratios = []
        for s in self.steps:
            if s.recovered is not None and s.peak_backlog > 0 and s.recovered > s.peak_at:
                drain = s.peak_backlog / (s.recovered - s.peak_at)
                ratios.append((drain + self.offered_per_s) / self.offered_per_s)
        return {
            "bench": "chaos",
            "lost": sum(self.lost.values()),
            "duplicated": sum(self.duplicated.values()),
            "max_recovery_s": round(max(recoveries), 1) if recoveries else None,
            "drain_ratio": round(min(ratios), 1) if ratios else None,
            "unrecovered": [s.name for s in self.steps if s.recovered is None],
            "replay_equal": self.replay_equal,
            "lost_by_kind": self.lost,
            "duplicated_by_kind": self.duplicated,
            "commands": self.commands,
            "signals": self.signals,
            "health_named_down": {
                s.name: s.health_named_down for s in self.steps if s.health_named_down is not None
            },
            "webhook_redeliveries": self.webhook_redeliveries,
        }


class ChaosRun:
    def __init__(self, base: Settings, plan: Plan, log_dir: Path) -> None:
        self.plan, self.log_dir = plan, log_dir
        self.stack_settings = chaos_settings(base)
        self.echo = plan.echo
        self.report = Report()
        self.down: str | None = None

    # -- the stack and the platform ----------------------------------------------------------
    @contextmanager
    def running(self) -> Iterator[ChaosRun]:
        self.echo("[chaos] starting its own stack (PostgreSQL, ClickHouse, Kafka)...")
        manager.up(self.stack_settings, self._stack_echo, services=SERVICES)
        name = f"voxagent_chaos_{uuid.uuid4().hex[:6]}"
        try:
            with isolated(self.stack_settings, name) as settings, JwksServer() as issuer:
                self.settings, self.issuer = settings, issuer
                ensure_topics(settings, domain_topics(settings))
                self.env = child_env(settings, issuer)
                self.procs = {
                    p: Process(p, settings, self.log_dir, env=self.env) for p in PROCESSES
                }
                for proc in self.procs.values():
                    proc.start()
                self.receiver = Receiver().start()
                try:
                    self._wait_api()
                    yield self
                finally:
                    for proc in self.procs.values():
                        proc.stop()
                    self.receiver.stop()
        finally:
            self._restore_services()
            manager.down(self.stack_settings, self._stack_echo, services=SERVICES)

    def _stack_echo(self, line: str) -> None:
        self.echo(f"  {line}")

    def _restore_services(self) -> None:
        if self.down is not None:
            manager.up(self.stack_settings, self._stack_echo, services=[self.down])
            self.down = None

    def _wait_api(self) -> None:
        url = f"http://127.0.0.1:{self.settings.api.port}/health"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the chaos API did not become healthy:\n" + self.procs["api"].tail())

    # -- observing -------------------------------------------------------------------------
    def _pg(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.settings.postgres.conninfo(), connect_timeout=3)

    def backlog(self) -> int | None:
        """Signals offered and not yet in the calls read model, plus acknowledged agents not yet
        in ClickHouse (None while a store does not answer)."""
        try:
            with self._pg() as conn:
                row = conn.execute("SELECT coalesce(sum(version), 0) FROM calls").fetchone()
            projected = int(row[0]) if row else 0
            client = self._clickhouse()
            try:
                in_ch = client.execute(
                    f"SELECT uniqExact(agent_id) FROM {self.settings.clickhouse.database}.agents "
                    "WHERE agent_id != %(caller)s",
                    {"caller": self.caller_id},
                )[0][0]
            finally:
                client.disconnect()
        except Exception:  # noqa: BLE001 - a store is away: no figure now
            return None
        agents = max(0, len(self.commands.acked) - int(in_ch))
        # signals handed to the producer, not only acknowledged ones: while the broker is away
        # nothing is acknowledged, yet the calls offered then are the backlog to drain
        return max(0, self.signals.produced - projected) + agents

    def _clickhouse(self) -> Any:
        from adapters.clickhouse.client import connect

        return connect(self.settings.clickhouse)

    def health(self) -> tuple[int, dict[str, Any], float]:
        began = time.monotonic()
        try:
            response = httpx.get(f"http://127.0.0.1:{self.settings.api.port}/health", timeout=30)
            body = response.json()
            status = response.status_code
        except (httpx.HTTPError, ValueError):
            status, body = 0, {}
        return status, body, time.monotonic() - began

    # -- the steps -------------------------------------------------------------------------
    def run(self) -> Report:
        headers = self.issuer.headers(SPACE)
        api = f"http://127.0.0.1:{self.settings.api.port}"
        agent = httpx.post(
            f"{api}/api/agents", json={"name": "chaos caller"}, headers=headers, timeout=30
        )
        agent.raise_for_status()
        self.caller_id = agent.json()["id"]
        hook = httpx.post(
            f"{api}/api/webhooks",
            json={"url": self.receiver.url("/chaos"), "event_types": ["agent.*"]},
            headers=headers,
            timeout=30,
        )
        hook.raise_for_status()
        self.commands = CommandLoad(api, headers, self.plan.agents_per_second)
        self.signals = SignalLoad(self.settings, agent.json()["id"], self.plan.concurrent_calls)
        threads = [
            threading.Thread(target=self.commands.run, daemon=True),
            threading.Thread(target=self.signals.run, daemon=True),
        ]
        for thread in threads:
            thread.start()
        began = time.monotonic()
        self.echo(f"[chaos] warm-up, {self.plan.warmup:.0f} s of steady load...")
        time.sleep(self.plan.warmup)
        warm = self.signals.acked_total()
        self.report.offered_per_s = warm / (time.monotonic() - began) + self.plan.agents_per_second
        self.echo(f"[chaos] offered ~{self.report.offered_per_s:.0f} signals+commands/s")
        for service, seconds in self.plan.outages:
            self._outage(service, seconds)
        for name in self.plan.kills:
            self._kill(name)
        self.echo("[chaos] stopping the load; waiting for everything to land...")
        self.commands.stop.set()
        self.signals.stop.set()
        for thread in threads:
            thread.join(timeout=660)
        self._settle("end", time.monotonic())
        self._verify()
        return self.report

    def _outage(self, service: str, seconds: float) -> None:
        step = Step(f"{service} down {seconds:.0f}s", time.monotonic())
        self.echo(f"[chaos] stopping {service} for {seconds:.0f} s...")
        before = dict(self.commands.statuses)
        manager.down(self.stack_settings, self._stack_echo, services=[service])
        self.down = service
        named: list[bool] = []
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            status, body, took = self.health()
            deps = body.get("dependencies", {})
            named.append(status == 503 and deps.get(service, {}).get("ok") is False)
            step.health_slowest_s = max(step.health_slowest_s, took)
            time.sleep(max(0.0, min(2.0, until - time.monotonic())))
        step.health_named_down = bool(named) and all(named)
        step.statuses_while_down = {
            code: n - before.get(code, 0) for code, n in self.commands.statuses.items()
        }
        self.echo(f"[chaos] starting {service} again...")
        self._start(service)
        self.down = None
        self._recover(step)

    def _start(self, service: str, attempts: int = 3) -> None:
        """Start a stopped service again; a broker that exits while it starts (KRaft, on a busy
        machine, now and then) is started once more: the run is about the platform, not it."""
        for attempt in range(1, attempts + 1):
            try:
                manager.up(self.stack_settings, self._stack_echo, services=[service])
                return
            except StackError as exc:
                if attempt == attempts:
                    raise
                self.echo(f"[chaos] {service} did not start ({str(exc).splitlines()[0]}); again")
                time.sleep(5.0)

    def _kill(self, name: str) -> None:
        step = Step(f"kill -9 {name}", time.monotonic())
        self.echo(f"[chaos] kill -9 {name}, restarted 2 s later...")
        self.procs[name].kill9()
        time.sleep(2.0)
        self.procs[name].start()
        self._recover(step)

    def _recover(self, step: Step) -> None:
        step.restored = time.monotonic()
        baseline = max(50, int(self.report.offered_per_s * 2))
        deadline = step.restored + self.plan.recover_timeout
        while time.monotonic() < deadline:
            backlog = self.backlog()
            if backlog is not None:
                if backlog > step.peak_backlog:
                    step.peak_backlog, step.peak_at = backlog, time.monotonic()
                if backlog <= baseline:
                    step.recovered = time.monotonic()
                    break
            time.sleep(0.5)
        took = f"{step.recovered - step.restored:.1f} s" if step.recovered else "NOT recovered"
        self.echo(f"[chaos] {step.name}: peak backlog {step.peak_backlog}, recovered in {took}")
        self.report.steps.append(step)

    def _settle(self, name: str, began: float) -> None:
        """After the load: wait until every acknowledged write has landed everywhere."""
        deadline = time.monotonic() + self.plan.recover_timeout
        while time.monotonic() < deadline:
            if self.backlog() == 0 and self._delivered() >= len(self.commands.acked):
                return
            time.sleep(1.0)

    def _delivered(self) -> int:
        ids = {r.envelope.get("aggregate_id") for r in self.receiver.on("/chaos")}
        return len(ids & set(self.commands.acked))

    # -- the verdict -------------------------------------------------------------------------
    def _verify(self) -> None:
        acked_agents = set(self.commands.acked)
        db = self.settings.clickhouse.database
        with self._pg() as conn:
            in_read_model = {
                str(r[0])
                for r in conn.execute(
                    "SELECT id FROM agents WHERE space_id = %s", (SPACE,)
                ).fetchall()
            }
            stored = dict(
                conn.execute(
                    "SELECT originator_id::text, max(originator_version) FROM calls_events "
                    "GROUP BY 1"
                ).fetchall()
            )
            read_versions = dict(conn.execute("SELECT id::text, version FROM calls").fetchall())
            signal_dups = conn.execute(
                "SELECT count(*) - count(DISTINCT (originator_id, "
                "convert_from(state, 'UTF8')::jsonb->>'signal_id')) FROM calls_events"
            ).fetchone()
        client = self._clickhouse()
        try:
            ch_agents = {r[0] for r in client.execute(f"SELECT DISTINCT agent_id FROM {db}.agents")}
            ch_calls = dict(
                client.execute(f"SELECT call_id, max(version) FROM {db}.calls GROUP BY call_id")
            )
        finally:
            client.disconnect()
        acked = dict(self.signals.acked)
        delivered = {r.envelope.get("aggregate_id") for r in self.receiver.on("/chaos")}
        ids = [r.webhook_id for r in self.receiver.on("/chaos")]
        r = self.report
        r.lost = {
            "agents_not_in_read_model": len(acked_agents - in_read_model),
            "agents_not_in_clickhouse": len(acked_agents - ch_agents),
            "agents_not_delivered": len(acked_agents - delivered),
            "signals_not_stored": sum(max(0, n - stored.get(c, 0)) for c, n in acked.items()),
            "calls_behind_in_read_model": sum(
                1 for c, v in stored.items() if read_versions.get(c, 0) < v
            ),
            "calls_behind_in_clickhouse": sum(
                1 for c, v in stored.items() if ch_calls.get(c, 0) < v
            ),
        }
        r.duplicated = {
            "signals_stored_twice": int(signal_dups[0]) if signal_dups else 0,
            "events_beyond_signals": sum(max(0, v - acked.get(c, 0)) for c, v in stored.items()),
        }
        r.webhook_redeliveries = len(ids) - len(set(ids))
        r.commands = {
            "acknowledged": len(acked_agents),
            "statuses": dict(self.commands.statuses),
            "unavailable": self.commands.unavailable,
            "hangs": self.commands.hangs,
        }
        r.signals = {
            "produced": self.signals.produced,
            "acknowledged": sum(acked.values()),
            "failed": self.signals.failed,
            "calls": len(acked),
        }
        for model in ("agents", "calls"):
            r.replay_equal[model] = self._replay_check(model)

    def _replay_check(self, model: str) -> bool:
        result = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "infra.cli", "replay", model, "--check"],
            cwd=REPO_ROOT,
            env={**settings_env(self.settings), **self.env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            self.echo(
                f"[chaos] replay {model} --check: {result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        return result.returncode == 0
