"""Spine benchmark: sustained agent updates through the whole event-sourced path.

command (AgentsApplication) -> event store (PostgreSQL) -> relay -> Kafka -> Faust projectors
-> Postgres read model (and ClickHouse). It measures events/s written and projected, and the
command-to-read-model lag: for every update, the time from the command returning to the read
model first showing that version (or a later one), observed by polling the read model.

Runs against the running local stack (``voxagent stack up``) in databases and topics of its own;
starts its own relay and projector processes. Ends with one line of JSON (DESIGN §8).

    .venv/bin/python bench/spine.py --duration 60 --rate 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.kafka.topics import domain_topics, ensure_topics
from bench.stats import percentile
from commands.agents import Actor, CreateAgent, UpdateAgent
from domain.agent_config import AgentConfig
from infra.bootstrap import bootstrap
from infra.settings import Settings
from tests.support.databases import isolated
from tests.support.processes import Process, eventually


class Observer(threading.Thread):
    """Polls the read model and records when each agent first reached each version."""

    def __init__(self, container, space_id: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.container, self.space_id, self.interval = container, space_id, interval
        self.seen: dict[uuid.UUID, int] = {}
        self.reached: dict[tuple[uuid.UUID, int], float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        with self.container.pool.connection() as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT id, version FROM agents WHERE space_id = %s", (self.space_id,)
                ).fetchall()
                conn.rollback()
                now = time.perf_counter()
                for agent_id, version in rows:
                    before = self.seen.get(agent_id, 0)
                    for v in range(before + 1, version + 1):
                        self.reached[(agent_id, v)] = now
                    if version > before:
                        self.seen[agent_id] = version
                time.sleep(self.interval)


def drive(container, actor, agents, rate, duration, committed, threads):
    """Issue updates round-robin over the agents at ``rate`` per second for ``duration``."""
    per_thread = rate / threads
    stop_at = time.perf_counter() + duration
    lock = threading.Lock()
    counter = [0]

    def worker(index: int) -> None:
        mine = agents[index::threads]
        versions = {a: 1 for a in mine}
        n = 0
        start = time.perf_counter()
        while True:
            due = start + n / per_thread
            now = time.perf_counter()
            if now >= stop_at:
                return
            if due > now:
                time.sleep(due - now)
            agent_id = mine[n % len(mine)]
            result = container.agents.update_agent(
                actor, UpdateAgent(agent_id=agent_id, patch={"description": f"rev {n}"})
            )
            versions[agent_id] = result.version
            committed[(agent_id, result.version)] = time.perf_counter()
            n += 1
            with lock:
                counter[0] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    last, last_t = 0, time.perf_counter()
    while any(t.is_alive() for t in pool):
        time.sleep(5)
        now = time.perf_counter()
        print(
            f"  ... {counter[0]} updates, {(counter[0] - last) / (now - last_t):.0f}/s", flush=True
        )
        last, last_t = counter[0], now
    for t in pool:
        t.join()
    return counter[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of sustained load")
    parser.add_argument("--rate", type=float, default=1000.0, help="target updates per second")
    parser.add_argument("--agents", type=int, default=200, help="agents updated round-robin")
    parser.add_argument("--threads", type=int, default=16, help="command threads")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="read-model polling interval")
    args = parser.parse_args()

    name = f"voxagent_bench_{uuid.uuid4().hex[:8]}"
    with (
        isolated(Settings(), name) as settings,
        __import__("tempfile").TemporaryDirectory() as logs,
    ):
        print(
            f"spine bench: {args.rate:.0f} updates/s for {args.duration:.0f}s over "
            f"{args.agents} agents ({args.threads} threads); databases {name}",
            flush=True,
        )
        ensure_topics(settings, domain_topics(settings))
        procs = [Process(n, settings, Path(logs)).start() for n in ("relay", "projector")]
        container = bootstrap(settings)
        actor = Actor(space_id="bench", subject="bench")
        try:
            print("creating agents and waiting for the pipeline...", flush=True)
            agents = [
                container.agents.create_agent(
                    actor, CreateAgent(config=AgentConfig(name=f"bench {i}"))
                ).id
                for i in range(args.agents)
            ]

            def all_projected() -> bool:
                with container.pool.connection() as conn:
                    n = conn.execute(
                        "SELECT count(*) FROM agents WHERE space_id = 'bench'"
                    ).fetchone()[0]
                    conn.rollback()
                return n == len(agents)

            eventually(all_projected, timeout=180, what="agents projected", processes=tuple(procs))
            observer = Observer(container, "bench", args.poll_ms / 1000)
            observer.start()
            committed: dict = {}
            print("driving updates...", flush=True)
            started = time.perf_counter()
            total = drive(
                container, actor, agents, args.rate, args.duration, committed, args.threads
            )
            elapsed = time.perf_counter() - started
            eventually(
                lambda: all(k in observer.reached for k in committed),
                timeout=120,
                what="every update in the read model",
                processes=tuple(procs),
            )
            drained = time.perf_counter() - started
            observer.stop.set()
            lags = [(observer.reached[k] - t) * 1000 for k, t in committed.items()]
            lags = [max(lag, 0.0) for lag in lags]
        finally:
            for p in procs:
                p.stop()
            container.close()

    result = {
        "bench": "spine",
        "events_per_s": round(total / elapsed),
        "projected_events_per_s": round(total / drained),
        "events": total,
        "duration_s": round(elapsed, 1),
        "lag_p50_ms": round(percentile(lags, 50), 1),
        "lag_p95_ms": round(percentile(lags, 95), 1),
        "lag_p99_ms": round(percentile(lags, 99), 1),
        "lag_max_ms": round(max(lags), 1),
        "lag_mean_ms": round(statistics.fmean(lags), 1),
        "target_rate": args.rate,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    print()
    print(f"{'events written':<28}{total:>10}")
    print(f"{'events/s (command side)':<28}{result['events_per_s']:>10}")
    print(f"{'events/s (to read model)':<28}{result['projected_events_per_s']:>10}")
    for key in ("lag_p50_ms", "lag_p95_ms", "lag_p99_ms", "lag_max_ms"):
        print(f"{key:<28}{result[key]:>10}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
