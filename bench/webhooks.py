"""Webhooks benchmark: event-to-delivery lag and throughput of outbound webhooks.

command (AgentsApplication.update_agent) -> event store (PostgreSQL) -> relay -> Kafka ->
``voxagent webhooks dispatch`` (Faust; one queued delivery per subscribed endpoint) -> Postgres
queue -> ``voxagent webhooks send`` -> a local receiver. E endpoints subscribe to ``agent.*``, so
every event is delivered E times. The receiver (aiohttp, in a process of its own) listens on a
port per endpoint (as distinct hosts would be for the sender's connection pool; ``--shared-host``
puts them all on one), records per request the webhook-id, the endpoint, the receive time and
the envelope's ``occurred_at``, and verifies the signature of a sample with ``standardwebhooks``.

Lag, per delivery: receive time - the event's ``occurred_at`` (wall clock, same machine;
``occurred_at`` has millisecond resolution). Only events issued after the warm-up count for the
lag; every event issued (agent creations, warm-up, window) must arrive exactly once per endpoint
once the run drains, else it is counted lost (or duplicated). After the run, each delivery is
split into stages from timestamps the platform already records: the Kafka record's timestamp
(relay), ``webhook_deliveries.enqueued_at`` (dispatcher), ``webhook_attempts.started_at``
(sender) and the receive time.

Runs against the running local stack (``voxagent stack up``) in databases and topics of its own;
starts its own relay, dispatcher and sender (the projectors are not needed and not started).
``--profile DIR`` also samples the platform's processes with py-spy during the window. Ends with
one line of JSON (DESIGN §8).

    .venv/bin/python bench/webhooks.py --rate 200 --endpoints 10 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stats import percentile

SPACE = "benchwh"
# what each process logs once it has built its applications (in this order)
READY = {"relay": "starting at position", "dispatch": "", "send": "webhook sender running"}
WEBHOOK_ENV = {"VOXAGENT_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.1/32"]'}


# -- the receiver (its own process: it must not share the driver's GIL) ---------------------


def receive(
    secrets: list[str], out: mp.Queue, stop: mp.Event, verify_every: int, ports: int
) -> None:
    from aiohttp import web
    from standardwebhooks import Webhook

    verifiers = [Webhook(s) for s in secrets]
    records: list[tuple[int, str, float, str]] = []
    signatures = Counter()
    seen = [0]

    async def hook(request: web.Request) -> web.Response:
        received = time.time()
        index = int(request.match_info["index"])
        body = await request.read()
        records.append(
            (index, request.headers["webhook-id"], received, json.loads(body)["occurred_at"])
        )
        seen[0] += 1
        if seen[0] % verify_every == 0:
            try:
                verifiers[index].verify(body, dict(request.headers))
                signatures["verified"] += 1
            except Exception:  # noqa: BLE001 - counted and reported
                signatures["bad"] += 1
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook/{index}", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        listening = []
        for _ in range(ports):
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            listening.append(site._server.sockets[0].getsockname()[1])
        out.put(("ports", listening))
        while not stop.is_set():
            await asyncio.sleep(0.25)
            if records:
                chunk, records[:] = records[:], []
                out.put(("records", chunk))
        await runner.cleanup()
        out.put(("records", records[:]))
        out.put(("done", dict(signatures)))

    asyncio.run(main())


class Deliveries(threading.Thread):
    """The driver's side of the receiver: collects what it recorded."""

    def __init__(self, queue: mp.Queue) -> None:
        super().__init__(daemon=True)
        self.queue = queue
        self.lock = threading.Lock()
        self.records: list[tuple[int, str, float, float]] = []  # index, event id, recv, occurred
        self.pairs: Counter[tuple[int, str]] = Counter()
        self.signatures: dict[str, int] = {}
        self.done = threading.Event()
        self._occurred: dict[str, float] = {}

    def epoch(self, stamp: str) -> float:
        value = self._occurred.get(stamp)
        if value is None:
            value = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            self._occurred[stamp] = value
        return value

    def run(self) -> None:
        while True:
            kind, value = self.queue.get()
            if kind == "done":
                self.signatures = value
                self.done.set()
                return
            rows = [(i, wid, t, self.epoch(occ)) for i, wid, t, occ in value]
            with self.lock:
                self.records.extend(rows)
                self.pairs.update((i, wid) for i, wid, _, _ in rows)

    def count(self) -> int:
        with self.lock:
            return len(self.records)

    def since(self, start: int) -> list[tuple[int, str, float, float]]:
        with self.lock:
            return self.records[start:]


# -- the driver ------------------------------------------------------------------------------


def drive(container, actor, agents, rate, seconds, issued, threads, deliveries, label):
    """Update the agents round-robin at ``rate`` per second for ``seconds``; ``issued`` gets
    ``event_id -> wall time`` of every command that returned."""
    from commands.agents import UpdateAgent
    from domain.contract import event_id

    per_thread = rate / threads
    stop_at = time.perf_counter() + seconds
    counter = [0]
    lock = threading.Lock()

    def worker(index: int) -> None:
        mine = agents[index::threads]
        n, start = 0, time.perf_counter()
        while True:
            due, now = start + n / per_thread, time.perf_counter()
            if now >= stop_at:
                return
            if due > now:
                time.sleep(due - now)
            agent_id = mine[n % len(mine)]
            result = container.agents.update_agent(
                actor, UpdateAgent(agent_id=agent_id, patch={"description": f"rev {n}"})
            )
            issued[event_id(agent_id, result.version)] = time.time()
            n += 1
            with lock:
                counter[0] += 1

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    last_n, last_t, last_d = 0, time.perf_counter(), deliveries.count()
    while any(t.is_alive() for t in pool):
        time.sleep(min(5.0, max(0.1, stop_at - time.perf_counter() + 0.05)))
        now, total = time.perf_counter(), deliveries.count()
        if now - last_t < 1.0:
            continue
        recent = deliveries.since(last_d)
        lags = [(recv - occ) * 1000 for _, _, recv, occ in recent]
        print(
            f"  {label} {counter[0]:>7} events ({(counter[0] - last_n) / (now - last_t):.0f}/s)"
            f"  {total:>8} deliveries ({len(recent) / (now - last_t):.0f}/s)"
            f"  lag p50 {percentile(lags, 50):6.0f} ms  p99 {percentile(lags, 99):6.0f} ms",
            flush=True,
        )
        last_n, last_t, last_d = counter[0], now, total
    return counter[0]


# -- where the time goes ---------------------------------------------------------------------


def kafka_timestamps(settings, topic: str) -> dict[str, float]:
    """``event_id -> record timestamp`` (the relay's producer stamps it at produce time)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"benchwh-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        stamps: dict[str, float] = {}
        left = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error():
                    continue
                stamps[json.loads(msg.value())["event_id"]] = msg.timestamp()[1] / 1000
                if msg.offset() + 1 >= ends[msg.partition()]:
                    left.discard(msg.partition())
        return stamps
    finally:
        consumer.close()


def stages(container, endpoints, measured, deliveries, stamps):
    """Per-stage milliseconds of every recorded first attempt of a measured delivery, and what
    the queue says about the sender (after it has stopped)."""
    index_of = {eid: i for i, eid in enumerate(endpoints)}
    first: dict[tuple[int, str], float] = {}
    for i, wid, recv, _ in deliveries.records:
        first.setdefault((i, wid), recv)
    with container.pool.connection() as conn:
        rows = conn.execute(
            "SELECT d.endpoint_id, d.event_id, extract(epoch FROM d.occurred_at), "
            "extract(epoch FROM d.enqueued_at), extract(epoch FROM a.started_at), "
            "extract(epoch FROM d.completed_at), d.attempts, d.next_attempt_at, d.status "
            "FROM webhook_deliveries d "
            "LEFT JOIN webhook_attempts a ON a.delivery_id = d.id AND a.attempt = 1 "
            "WHERE d.space_id = %s",
            (SPACE,),
        ).fetchall()
        payload = conn.execute(
            "SELECT avg(octet_length(payload)) FROM webhook_deliveries WHERE space_id = %s",
            (SPACE,),
        ).fetchone()[0]
        conn.rollback()
    out: dict[str, list[float]] = {k: [] for k in STAGES}
    retried = unrecorded = 0
    claims: Counter[datetime] = Counter()  # a claim leases its rows until now + lease
    for endpoint_id, wid, occurred, enqueued, started, completed, attempts, lease, status in rows:
        retried += attempts > 1
        unrecorded += status == "pending"  # sent and received, but the sender never recorded it
        recv = first.get((index_of.get(endpoint_id, -1), wid))
        if wid not in measured or recv is None or started is None:
            continue
        claims[lease] += attempts == 1
        occurred, enqueued, started = float(occurred), float(enqueued), float(started)
        kafka = stamps.get(wid)
        if kafka is not None:
            out["relay"].append((kafka - occurred) * 1000)
            out["kafka+dispatch"].append((enqueued - kafka) * 1000)
        out["queue wait"].append((started - enqueued) * 1000)
        out["send"].append((recv - started) * 1000)
        if completed is not None:
            out["record (after)"].append((float(completed) - recv) * 1000)
        out["total"].append((recv - occurred) * 1000)
    sizes = sorted(claims.values())
    span = (max(claims) - min(claims)).total_seconds() if claims else 0.0
    summary = {
        "claims": len(sizes),
        "claims_per_s": round(len(sizes) / span, 1) if span else None,
        "rows_per_claim_p50": percentile(sizes, 50),
        "rows_per_claim_max": max(sizes, default=0),
        "payload_bytes": round(float(payload or 0)),
        "unrecorded_at_stop": unrecorded,
        "stage_coverage": len(out["total"]),
    }
    return out, len(rows), retried, summary


STAGES = {
    "relay": "occurred_at -> Kafka record timestamp (relay)",
    "kafka+dispatch": "Kafka timestamp -> enqueued_at (dispatcher)",
    "queue wait": "enqueued_at -> attempt started_at (sender claim)",
    "send": "started_at -> received (sign + HTTP)",
    "total": "occurred_at -> received",
    "record (after)": "received -> completed_at (not on the lag path)",
}


def cpu_ticks(pids: dict[str, int]) -> dict[int, tuple[str, int]]:
    """CPU ticks used so far per process, labelled: ours by pid, the services by name; the
    whole machine's busy ticks under pid 0 and its stolen ticks under -1."""
    by_pid = {pid: name for name, pid in pids.items()}
    ticks: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        name = by_pid.get(int(entry)) or {"postgres": "postgres", "java": "kafka"}.get(
            comm, "clickhouse" if comm.startswith("clickhouse") else "other"
        )
        ticks[int(entry)] = (name, int(fields[11]) + int(fields[12]))
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    ticks[0] = ("machine", user + nice + system + irq + softirq)
    ticks[-1] = ("steal", steal)  # taken by the hypervisor for other guests
    return ticks


def cpu_percent(before: dict, after: dict, seconds: float) -> dict[str, int]:
    """% of one core per label between two ``cpu_ticks`` (processes that ended are missed)."""
    used: Counter[str] = Counter()
    for pid, (name, ticks) in after.items():
        old = before.get(pid)
        used[name] += ticks - (old[1] if old and old[0] == name else 0)
    # busy time of processes that ended during the window (someone else's tests, builds...)
    listed = sum(n for k, n in used.items() if k not in ("machine", "steal"))
    used["ended"] = max(0, used["machine"] - listed)
    per_percent = os.sysconf("SC_CLK_TCK") * seconds / 100
    return {name: round(n / per_percent) for name, n in used.most_common()}


def profile(pids: dict[str, int], seconds: float, directory: Path) -> list[subprocess.Popen]:
    """py-spy (raw collapsed stacks) on each process for ``seconds``, in the background."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    directory.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--nonblocking",
                "-r",
                "100",
                "-d",
                str(int(seconds)),
                "-f",
                "raw",
                "-o",
                str(directory / f"{name}.txt"),
                "--pid",
                str(pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def hot_spots(path: Path, top: int = 8) -> tuple[list[str], list[str]]:
    """The functions with the most samples, inclusive and self, in a py-spy raw file."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = []
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            frames.append(f"{name} ({where.rsplit(':', 1)[0].split('/')[-1].rstrip(')')})")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n

    def show(counter: Counter[str]) -> list[str]:
        return [f"{100 * n / total:5.1f}%  {f}" for f, n in counter.most_common(top)]

    return show(inclusive), show(own)


# -- the run ---------------------------------------------------------------------------------


def delete_topics(settings) -> None:
    """The run's topics (and Faust's internal ones), all under its own prefix."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        with contextlib.suppress(Exception):
            future.result()


@contextlib.contextmanager
def databases(name: str):
    """``isolated()`` that also deletes the run's topics, and where failing to drop the databases
    afterwards (``DROP DATABASE ... WITH (FORCE)`` is refused while an autovacuum worker is in
    it) costs a warning, not the run's figures."""
    from infra.settings import Settings
    from tests.support.databases import isolated

    manager = isolated(Settings(), name)
    settings = manager.__enter__()
    try:
        yield settings
        delete_topics(settings)
    except BaseException:
        if not manager.__exit__(*sys.exc_info()):
            raise
    else:
        try:
            manager.__exit__(None, None, None)
        except Exception as exc:  # noqa: BLE001 - reported; the figures are kept
            print(f"warning: could not drop {name} ({exc}); drop it by hand", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="agent updates per second")
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints (all get every event)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load not measured")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for every delivery after the load stops",
    )
    parser.add_argument("--agents", type=int, default=20, help="agents updated round-robin")
    parser.add_argument("--threads", type=int, default=4, help="command threads")
    parser.add_argument(
        "--verify-every",
        type=int,
        default=50,
        help="the receiver verifies the signature of every Nth request",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the relay, dispatcher, sender and receiver during the window "
        "into this directory (raw collapsed stacks)",
    )
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument(
        "--shared-host",
        action="store_true",
        help="every endpoint on one port of the receiver (one host for the sender's "
        "connection pool) instead of a port each",
    )
    parser.add_argument(
        "--sender-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra variable for the sender, e.g. "
        "VOXAGENT_WEBHOOKS__PER_ENDPOINT_CONCURRENCY=32 (repeatable)",
    )
    args = parser.parse_args()

    from adapters.kafka.topics import domain_topics, ensure_topics
    from commands.agents import Actor, CreateAgent
    from commands.webhooks import CreateEndpoint, new_secret
    from domain.agent_config import AgentConfig
    from domain.contract import event_id
    from domain.webhooks import EndpointSpec
    from infra.bootstrap import bootstrap
    from tests.support.processes import Process, eventually

    sender_env = {**WEBHOOK_ENV, **dict(kv.split("=", 1) for kv in args.sender_env)}
    spawn = mp.get_context("spawn")
    secrets = [new_secret() for _ in range(args.endpoints)]
    queue, stop = spawn.Queue(), spawn.Event()
    receiver = spawn.Process(
        target=receive,
        args=(secrets, queue, stop, args.verify_every, 1 if args.shared_host else args.endpoints),
        daemon=True,
    )
    receiver.start()
    kind, ports = queue.get(timeout=60)
    assert kind == "ports", kind
    deliveries = Deliveries(queue)
    deliveries.start()

    name = f"voxagent_benchwh_{uuid.uuid4().hex[:8]}"
    E = args.endpoints
    with databases(name) as settings, tempfile.TemporaryDirectory() as logs:
        print(
            f"webhooks bench: {args.rate:.0f} events/s x {E} endpoints for {args.duration:.0f}s "
            f"(+{args.warmup:.0f}s warm-up) over {args.agents} agents ({args.threads} threads); "
            f"databases {name}; receiver 127.0.0.1 ports {ports[0]}..{ports[-1]}",
            flush=True,
        )
        ensure_topics(settings, domain_topics(settings))
        procs = {
            "relay": Process("relay", settings, Path(logs)),
            "dispatch": Process("webhooks dispatch", settings, Path(logs)),
            "send": Process("webhooks send", settings, Path(logs), env=sender_env),
        }
        container = bootstrap(settings)
        actor = Actor(space_id=SPACE, subject="bench")
        issued: dict[str, float] = {}
        try:
            # One at a time: each process creates the event stores' tables and functions, and
            # two doing it at once can fail ("tuple concurrently updated" on eventsourcing's
            # CREATE OR REPLACE FUNCTION).
            for key, ready in READY.items():
                proc = procs[key].start()
                eventually(
                    lambda p=proc, r=ready: (
                        p.log.exists() and r in p.log.read_text("utf-8", "replace")
                    ),
                    timeout=120,
                    what=f"{key} started",
                    processes=(proc,),
                )
            container.applications()  # the driver's own, after theirs
            pids = {n: p.proc.pid for n, p in procs.items()}
            pids.update(receiver=receiver.pid, driver=os.getpid())
            print("pids: " + ", ".join(f"{n} {pid}" for n, pid in pids.items()), flush=True)
            endpoints = [
                container.webhooks.create_endpoint(
                    actor,
                    CreateEndpoint(
                        secret=secrets[i],
                        spec=EndpointSpec(
                            url=f"http://127.0.0.1:{ports[i % len(ports)]}/hook/{i}",
                            event_types=["agent.*"],
                        ),
                    ),
                ).id
                for i in range(E)
            ]

            def projected() -> bool:
                with container.pool.connection() as conn:
                    n = conn.execute(
                        "SELECT count(*) FROM webhook_endpoints "
                        "WHERE space_id = %s AND enabled AND NOT deleted",
                        (SPACE,),
                    ).fetchone()[0]
                    conn.rollback()
                return n == E

            print("waiting for the dispatcher to project the endpoints...", flush=True)
            eventually(
                projected, timeout=180, what="endpoints projected", processes=tuple(procs.values())
            )

            def missing() -> list[tuple[int, str]]:
                with deliveries.lock:
                    return [
                        (i, w) for w in issued for i in range(E) if (i, w) not in deliveries.pairs
                    ]

            print("creating agents; waiting for their creations at every endpoint...", flush=True)
            agents = []
            for i in range(args.agents):
                result = container.agents.create_agent(
                    actor, CreateAgent(config=AgentConfig(name=f"bench {i}"))
                )
                issued[event_id(result.id, result.version)] = time.time()
                agents.append(result.id)
            eventually(
                lambda: not missing(),
                timeout=180,
                interval=0.5,
                what="agent creations delivered",
                processes=tuple(procs.values()),
            )

            if args.warmup > 0:
                print(f"warming up for {args.warmup:.0f}s...", flush=True)
                drive(
                    container,
                    actor,
                    agents,
                    args.rate,
                    args.warmup,
                    issued,
                    args.threads,
                    deliveries,
                    "warm-up",
                )
            print(f"measuring for {args.duration:.0f}s...", flush=True)
            window: dict[str, float] = {}
            spies = []
            if args.profile:
                spy = {n: pids[n] for n in ("relay", "dispatch", "send", "receiver")}
                spies = profile(spy, min(args.profile_seconds, args.duration), args.profile)
            cpu0, t0 = cpu_ticks(pids), time.time()
            total = drive(
                container,
                actor,
                agents,
                args.rate,
                args.duration,
                window,
                args.threads,
                deliveries,
                "window",
            )
            t1, cpu1 = time.time(), cpu_ticks(pids)
            issued.update(window)
            for s in spies:
                s.wait()

            print("draining...", flush=True)
            deadline = time.monotonic() + args.drain_timeout
            while (left := missing()) and time.monotonic() < deadline:
                time.sleep(0.5)
            drained = time.time() - t0
            time.sleep(2.0)  # late duplicates
            stamps = kafka_timestamps(settings, container.topic("agents"))
            procs["send"].stop()  # records what it sent last
            breakdown, queued, retried, claims = stages(
                container, endpoints, window, deliveries, stamps
            )
        finally:
            for p in procs.values():
                p.stop()
            stop.set()
            deliveries.done.wait(30)
            receiver.join(10)
            container.close()

    report(args, deliveries, window=window, issued=issued, events=total, t0=t0, t1=t1,
           cpu=cpu_percent(cpu0, cpu1, t1 - t0), left=left, drained=drained,
           breakdown=breakdown, queued=queued, retried=retried, queue=claims)  # fmt: skip


def report(args, deliveries, *, window, issued, events, t0, t1, cpu, left, drained, breakdown,
           queued, retried, queue) -> None:  # fmt: skip
    """The human-readable table, then the one line of JSON."""
    first: dict[tuple[int, str], float] = {}
    for i, wid, recv, occ in deliveries.records:
        if wid in window:
            first.setdefault((i, wid), (recv - occ) * 1000)
    lags = list(first.values())
    in_window = sum(1 for _, _, recv, _ in deliveries.records if t0 <= recv <= t1)
    elapsed, E = t1 - t0, args.endpoints
    dupes = sum(n - 1 for n in deliveries.pairs.values() if n > 1)
    p99 = percentile(lags, 99)
    result = {
        "bench": "webhooks",
        "events_per_s": round(events / elapsed, 1),
        "endpoints": E,
        "duration_s": round(elapsed, 1),
        "deliveries_per_s": round(in_window / elapsed),
        "offered_deliveries_per_s": round(events * E / elapsed),
        "lag_p50_ms": round(percentile(lags, 50), 1),
        "lag_p95_ms": round(percentile(lags, 95), 1),
        "lag_p99_ms": round(p99, 1),
        "lag_max_ms": round(max(lags, default=float("nan")), 1),
        "measured_deliveries": len(lags),
        "events": len(issued),
        "deliveries_expected": len(issued) * E,
        "deliveries_queued": queued,
        "lost": len(left),
        "duplicates": dupes,
        "retried": retried,
        "queue": queue,
        "signatures": deliveries.signatures,
        "drain_s": round(drained - elapsed, 1),
        "target_met": p99 <= 1000 and not left and events >= 0.95 * args.rate * elapsed,
        "cpu_pct": cpu,
        "target_rate": args.rate,
        "shared_host": args.shared_host,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    print()
    print(f"{'events (window)':<32}{events:>10}  {result['events_per_s']:>8}/s")
    print(f"{'deliveries received (window)':<32}{in_window:>10}  {result['deliveries_per_s']:>8}/s")
    print(f"{'lost / duplicates / retried':<32}{len(left):>10} / {dupes} / {retried}")
    print(f"{'received, never recorded':<32}{queue['unrecorded_at_stop']:>10}")
    for key in ("lag_p50_ms", "lag_p95_ms", "lag_p99_ms", "lag_max_ms"):
        print(f"{key:<32}{result[key]:>10}")
    print(f"\nstages of the {queue['stage_coverage']} of {len(lags)} measured deliveries with a "
          f"recorded first attempt{'':>6}p50 ms   p95 ms   p99 ms   max ms")  # fmt: skip
    for key, label in STAGES.items():
        v = breakdown[key]
        figures = [percentile(v, p) for p in (50, 95, 99)] + [max(v, default=float("nan"))]
        print(f"{key:<16}{label:<52}" + "".join(f"{f:9.1f}" for f in figures))
    print(f"sender claims (window): {queue['claims']}, {queue['claims_per_s']}/s, rows per claim "
          f"p50 {queue['rows_per_claim_p50']} max {queue['rows_per_claim_max']}; payload "
          f"{queue['payload_bytes']} bytes")  # fmt: skip
    print("\ncpu, % of one core over the window: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    if args.profile:
        for n in ("relay", "dispatch", "send", "receiver"):
            path = args.profile / f"{n}.txt"
            if path.exists() and path.stat().st_size:
                incl, own = hot_spots(path)
                print(f"\npy-spy {n}, inclusive:\n  " + "\n  ".join(incl)
                      + "\n self:\n  " + "\n  ".join(own))  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
