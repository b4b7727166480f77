"""Calls benchmark: C concurrent simulated calls in real time through ingest to the read model.

ingress topic -> ``voxagent ingest`` -> calls event store (PostgreSQL) -> ``voxagent relay`` ->
Kafka -> ``voxagent projector`` -> Postgres read model (and ClickHouse). The driver plays
``infra.simulate.plan_call`` calls in real time -- a turn a second, so one transcript per second
per speaker, usage every turn, tools, transfers, failures, 2-14 turns -- and keeps C calls in
flight: when a call ends, a new one starts. Only the signals produced in the window after the
warm-up count.

Lag, per signal: from just before the driver hands it to the Kafka producer to the first poll
(every ``--poll-ms``) of the ``calls`` read model that shows it. Every signal of a call is one
event of the Call aggregate, so the k-th signal of a call is aggregate version k, and the calls
row (upserted in the same transaction as the transcript, usage, ... rows) shows it once its
``version`` >= k. The figures include up to one polling interval of observation delay.
Signals/s ingested: events appended to the calls event store during the window (its
``notification_id`` before and after). ``--find-max`` runs C = 50, 100, 200, ... until p99 lag
passes 1 s and reports the largest C that stayed under it.

Runs against the local stack (``voxagent stack up``) in databases and topics of its own; starts
its own ingest, relay and projector. Ends with one line of JSON (DESIGN §8).

    .venv/bin/python bench/calls.py --concurrency 500 --duration 60
    .venv/bin/python bench/calls.py --find-max --duration 45
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.kafka.producer import build_producer
from adapters.kafka.topics import domain_topics, ensure_topics
from bench.stats import percentile
from commands.signals import iso_ms
from infra.bootstrap import bootstrap
from infra.settings import Settings
from infra.simulate import plan_call
from tests.support.databases import isolated
from tests.support.processes import Process, eventually

LADDER = (50, 100, 200, 300, 400, 500, 700, 1000)
AGENT = uuid.UUID("00000000-0000-4000-8000-00000000be4c")


class Observer(threading.Thread):
    """Polls the ``calls`` rows of the calls not yet fully seen; records version transitions."""

    def __init__(self, container, interval: float) -> None:
        super().__init__(daemon=True)
        self.container, self.interval = container, interval
        self.lock = threading.Lock()
        self.expected: dict[uuid.UUID, int] = {}  # call -> last version produced
        self.seen: dict[uuid.UUID, int] = {}
        self.reached: dict[tuple[uuid.UUID, int], float] = {}
        self.stop = threading.Event()

    def produced(self, call_id: uuid.UUID, version: int) -> None:
        with self.lock:
            self.expected[call_id] = version

    def pending(self) -> list[uuid.UUID]:
        with self.lock:
            return [c for c, v in self.expected.items() if self.seen.get(c, 0) < v]

    def run(self) -> None:
        with self.container.pool.connection() as conn:
            while not self.stop.is_set():
                ids = self.pending()
                rows = conn.execute(
                    "SELECT id, version FROM calls WHERE id = ANY(%s)", (ids,)
                ).fetchall()
                conn.rollback()
                now = time.perf_counter()
                for call_id, version in rows:
                    before = self.seen.get(call_id, 0)
                    for v in range(before + 1, version + 1):
                        self.reached[(call_id, v)] = now
                    self.seen[call_id] = max(before, version)
                time.sleep(self.interval)


def store_position(container) -> int:
    with container.pool.connection() as conn:
        n = conn.execute("SELECT coalesce(max(notification_id), 0) FROM calls_events").fetchone()
        conn.rollback()
    return n[0]


def drive(settings, producer, observer, container, *, calls, duration, warmup, seed, space):
    """Produce C calls in real time for ``duration`` s; C in flight, a new call when one ends.
    Returns the produce time of every signal, keyed ``(call_id, version)``, and window data."""
    topic = f"{settings.topic_prefix}.ingress.worker.v1"
    rng = random.Random(f"{seed}:bench")  # noqa: S311
    heap: list = []  # (due, index, position, begin, steps)
    index = 0

    def launch(begin: float) -> None:
        nonlocal index
        steps = plan_call(index, seed=seed, space_id=space, agent_id=AGENT)
        heapq.heappush(heap, (begin + steps[0].offset, index, 0, begin, steps))
        index += 1

    for _ in range(calls):
        launch(rng.uniform(0.0, 1.0))
    sent: dict[tuple[uuid.UUID, int], float] = {}
    late = 0.0
    start = time.perf_counter()
    window: dict[str, float] = {}
    next_report = 5.0
    while heap[0][0] < duration:
        due, i, pos, begin, steps = heapq.heappop(heap)
        now = time.perf_counter() - start
        if due > now:
            time.sleep(due - now)
        if "start" not in window and due >= warmup:
            window.update(start=time.perf_counter(), position=store_position(container))
        if due >= next_report:
            print(f"  ... {due:.0f}s: {len(sent)} signals, {index} calls started", flush=True)
            next_report += 5.0
        data = {**steps[pos].data, "at": iso_ms(datetime.now(UTC))}
        value = json.dumps(data, separators=(",", ":")).encode()
        key = uuid.UUID(data["call_id"])
        at = time.perf_counter()
        while True:
            try:
                producer.produce(topic, value, data["call_id"].encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        late = max(late, at - start - due)
        sent[(key, pos + 1)] = at
        observer.produced(key, pos + 1)
        if pos + 1 < len(steps):
            heapq.heappush(heap, (begin + steps[pos + 1].offset, i, pos + 1, begin, steps))
        else:
            launch(due + rng.uniform(0.1, 1.0))
    window.update(end=time.perf_counter(), end_position=store_position(container))
    producer.flush(60)
    return sent, window, late, index


def run_step(settings, container, producer, observer, procs, calls: int, args, seed: int):
    space = f"bench-{seed}"
    print(f"C={calls}: {args.duration:.0f}s of real-time calls (warm-up {args.warmup:.0f}s)...")
    sent, window, late, started = drive(
        settings, producer, observer, container, calls=calls, duration=args.duration,
        warmup=args.warmup, seed=seed, space=space,
    )  # fmt: skip
    drained = True
    try:
        eventually(
            lambda: all(k in observer.reached for k in sent),
            timeout=args.drain_timeout,
            what="every signal in the read model",
            processes=tuple(procs),
        )
    except AssertionError as exc:
        if any(not p.alive() for p in procs):
            raise
        print(f"  not drained after {args.drain_timeout:.0f}s: {str(exc).splitlines()[0]}")
        drained = False
    end = time.perf_counter()
    span = window["end"] - window["start"]
    measured = [k for k, t in sent.items() if window["start"] <= t < window["end"]]
    lags = [max(0.0, (observer.reached.get(k, end) - sent[k]) * 1000) for k in measured]
    projected = sum(window["start"] <= observer.reached.get(k, end) < window["end"] for k in sent)
    return {
        "concurrency": calls,
        "offered_signals_per_s": round(len(measured) / span),
        "signals_per_s": round((window["end_position"] - window["position"]) / span),
        "projected_signals_per_s": round(projected / span),
        "signals": len(measured),
        "calls_started": started,
        "window_s": round(span, 1),
        "lag_p50_ms": round(percentile(lags, 50), 1),
        "lag_p95_ms": round(percentile(lags, 95), 1),
        "lag_p99_ms": round(percentile(lags, 99), 1),
        "lag_max_ms": round(max(lags), 1),
        "driver_late_max_ms": round(late * 1000, 1),
        "drained": drained,
    }


def prime(settings, container, producer, procs) -> None:
    """One call as fast as possible, waited for: every process is up and assigned."""
    steps = plan_call(0, seed=1, space_id="bench-prime", agent_id=AGENT)
    topic = f"{settings.topic_prefix}.ingress.worker.v1"
    for step in steps:
        data = {**step.data, "at": iso_ms(datetime.now(UTC))}
        producer.produce(topic, json.dumps(data).encode(), data["call_id"].encode())
    producer.flush(30)

    def projected() -> bool:
        with container.pool.connection() as conn:
            row = conn.execute(
                "SELECT version FROM calls WHERE id = %s", (steps[0].data["call_id"],)
            ).fetchone()
            conn.rollback()
        return row is not None and row[0] == len(steps)

    eventually(projected, timeout=180, what="the priming call projected", processes=tuple(procs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", help="calls in flight (500)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds not measured")
    parser.add_argument("--find-max", action="store_true", help=f"step C up: {LADDER}")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="read-model polling")
    parser.add_argument("--drain-timeout", type=float, default=90.0, help="seconds")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().getrandbits(31))
    args = parser.parse_args()
    ladder = args.concurrency or (list(LADDER) if args.find_max else [500])

    name = f"voxagent_bench_{uuid.uuid4().hex[:8]}"
    with isolated(Settings(), name) as settings, tempfile.TemporaryDirectory() as logs:
        print(f"calls bench: C={ladder}, seed {args.seed}; databases {name}", flush=True)
        ensure_topics(settings, domain_topics(settings))
        commands = ("ingest", "relay", "projector")
        procs = [Process(n, settings, Path(logs)).start() for n in commands]
        container = bootstrap(settings)
        producer = build_producer(settings)
        observer = Observer(container, args.poll_ms / 1000)
        results = []
        try:
            print("waiting for ingest, relay and projector...", flush=True)
            prime(settings, container, producer, procs)
            print("pids: " + ", ".join(f"{p.command} {p.proc.pid}" for p in procs), flush=True)
            observer.start()
            for n, calls in enumerate(ladder):
                step = run_step(
                    settings, container, producer, observer, procs, calls, args, args.seed + n
                )
                results.append(step)
                print("  " + json.dumps(step), flush=True)
                if args.find_max and step["lag_p99_ms"] > 1000:
                    break
                time.sleep(3)
            observer.stop.set()
        finally:
            for p in procs:
                p.stop()
            container.close()

    passing = [r["concurrency"] for r in results if r["lag_p99_ms"] <= 1000 and r["drained"]]
    best = max(passing, default=0)
    head = next((r for r in results if r["concurrency"] == best), results[-1])
    print()
    cols = ("C", "offered/s", "ingested/s", "projected/s", "p50 ms", "p95 ms", "p99 ms", "max ms")
    keys = ("concurrency", "offered_signals_per_s", "signals_per_s", "projected_signals_per_s")
    keys += ("lag_p50_ms", "lag_p95_ms", "lag_p99_ms", "lag_max_ms")
    print("".join(f"{c:>12}" for c in cols))
    for r in results:
        print("".join(f"{r[k]:>12}" for k in keys))
    print(f"\nlargest C with p99 lag <= 1 s: {best} (target >= 500: {best >= 500})")
    summary = {
        "bench": "calls",
        "signals_per_s": head["signals_per_s"],
        "lag_p50_ms": head["lag_p50_ms"],
        "lag_p95_ms": head["lag_p95_ms"],
        "lag_p99_ms": head["lag_p99_ms"],
        "max_concurrent_calls": best,
        "concurrency": head["concurrency"],
        "target_met": best >= 500,
        "find_max": args.find_max,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "seed": args.seed,
        "steps": results,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
