"""Call admission benchmark: admit latency p50/p99 at a steady rate of call starts, with
concurrency limits in force (issue 13, target admission p99 <= 10 ms).

Runs on the local stack's PostgreSQL in a database of its own (created, migrated, dropped).
Call starts arrive open-loop at ``--rate`` per second, spread over ``--spaces`` spaces and
``--agents`` agents each; every start is one ``AdmissionService.admit`` (the PostgreSQL store,
one pooled connection per admit in flight). An admitted call holds its lease for a random
``--hold-min``..``--hold-max`` seconds, then releases it, so each space sits near its limit and
both leases and refusals are measured. Latency is the admit call as an entry point waits for it;
``sched_p99_ms`` also counts the wait for a free bench thread (from the planned start).

Ends with one line of JSON (DESIGN §8) holding ``admission_p99_ms``.

    .venv/bin/python bench/admission.py --rate 200 --duration 20
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg_pool import ConnectionPool  # noqa: E402

from adapters.postgres.admission import PostgresAdmissionStore  # noqa: E402
from bench.stats import percentile  # noqa: E402
from commands.admission import AdmissionService, Lease, Limits  # noqa: E402
from infra.settings import Settings  # noqa: E402
from tests.support.databases import isolated  # noqa: E402


class Releaser:
    """Releases leases when their hold is over (one thread, a heap of due times)."""

    def __init__(self, admission: AdmissionService) -> None:
        self.admission = admission
        self.due: list[tuple[float, str]] = []
        self.cv = threading.Condition()
        self.stopped = False
        self.released = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def later(self, at: float, call_id: str) -> None:
        with self.cv:
            heapq.heappush(self.due, (at, call_id))
            self.cv.notify()

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self.stopped and (not self.due or self.due[0][0] > time.monotonic()):
                    wait = self.due[0][0] - time.monotonic() if self.due else None
                    self.cv.wait(timeout=wait)
                if self.stopped and not self.due:
                    return
                if self.due and self.due[0][0] <= time.monotonic():
                    _, call_id = heapq.heappop(self.due)
                else:
                    continue
            self.admission.release(call_id)
            self.released += 1

    def drain(self) -> None:
        with self.cv:
            self.due = [(0.0, c) for _, c in self.due]
            heapq.heapify(self.due)
            self.stopped = True
            self.cv.notify()
        self.thread.join(timeout=60)


def run(args: argparse.Namespace, settings: Settings) -> dict[str, float | int]:
    size = args.connections
    with ConnectionPool(settings.postgres.conninfo(), min_size=size, max_size=size) as pool:
        pool.wait(timeout=30)
        admission = AdmissionService(PostgresAdmissionStore(pool))
        limits = Limits(space_concurrency=args.space_limit, agent_concurrency=args.agent_limit)
        spaces = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(args.spaces)]
        releaser = Releaser(admission)
        rng = random.Random(args.seed)
        latencies: list[float] = []
        scheduled: list[float] = []
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()

        def start(planned: float, space_id: str, agent: str, hold: float, warm: bool) -> None:
            call_id = str(uuid.uuid4())
            t0 = time.monotonic()
            result = admission.admit(space_id, agent, call_id, limits)
            t1 = time.monotonic()
            if isinstance(result, Lease):
                releaser.later(t1 + hold, call_id)
            if warm:
                return
            with lock:
                latencies.append((t1 - t0) * 1000)
                scheduled.append((t1 - planned) * 1000)
                outcomes["admitted" if isinstance(result, Lease) else result.code] += 1

        total = int(args.rate * (args.warmup + args.duration))
        warm_n = int(args.rate * args.warmup)
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.connections) as pool_threads:
            for i in range(total):
                planned = began + i / args.rate
                delay = planned - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                space_id = rng.choice(spaces)
                agent = f"agent-{rng.randrange(args.agents)}"
                hold = rng.uniform(args.hold_min, args.hold_max)
                pool_threads.submit(start, planned, space_id, agent, hold, i < warm_n)
                if i and i % int(args.rate * 5) == 0:
                    print(f"  {i}/{total} starts sent", flush=True)
        elapsed = time.monotonic() - began
        releaser.drain()
        with pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM call_leases").fetchone()
        left = int(row[0]) if row else -1
    n = len(latencies)
    return {
        "starts": n,
        "rate_per_s": round(total / elapsed, 1),
        "admitted": outcomes["admitted"],
        "refused_space": outcomes["concurrency_limit"],
        "refused_agent": outcomes["agent_concurrency_limit"],
        "leases_left": left,
        "admission_p50_ms": round(percentile(latencies, 50), 2),
        "admission_p99_ms": round(percentile(latencies, 99), 2),
        "admission_max_ms": round(max(latencies), 2) if latencies else float("nan"),
        "sched_p99_ms": round(percentile(scheduled, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="call starts per second")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--spaces", type=int, default=10)
    parser.add_argument("--agents", type=int, default=4, help="agents per space")
    parser.add_argument("--space-limit", type=int, default=10)
    parser.add_argument("--agent-limit", type=int, default=4)
    parser.add_argument("--hold-min", type=float, default=0.1, help="seconds a call holds")
    parser.add_argument("--hold-max", type=float, default=0.9)
    parser.add_argument("--connections", type=int, default=32, help="pool size = bench threads")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    name = f"bench_admission_{uuid.uuid4().hex[:8]}"
    print(
        f"admission: {args.rate:g} starts/s for {args.duration:g} s over {args.spaces} spaces "
        f"(limit {args.space_limit}/space, {args.agent_limit}/agent), database {name}"
    )
    with isolated(Settings(), name) as settings:
        figures = run(args, settings)
    print()
    print(f"{'figure':<20} {'value':>10}")
    for key, value in figures.items():
        print(f"{key:<20} {value:>10}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
