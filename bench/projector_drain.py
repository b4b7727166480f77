"""Projector drain: how fast ``voxagent projector`` works off a backlog of call events.

The calls benchmark (``bench/calls.py``) measures the whole path in real time, so on a loaded
machine whichever stage gets the least CPU sets its figure. This one isolates the projector:
N simulated calls (``infra.simulate.plan_call``, all their signals at once) go through
``voxagent ingest`` and ``voxagent relay`` into the calls topic while no projector runs; then
the projector starts and the script times, from the first projected row on, until the
``calls`` read model holds every event (the sum of the rows' ``version``). It reports events/s
and the projector process's CPU (``/proc``) over that time. Databases and topics of its own.
Ends with one line of JSON.

    .venv/bin/python bench/projector_drain.py --calls 3000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.kafka.producer import build_producer
from adapters.kafka.topics import domain_topics, ensure_topics
from commands.signals import iso_ms
from infra.bootstrap import bootstrap
from infra.settings import Settings
from infra.simulate import plan_call
from tests.support.databases import isolated
from tests.support.processes import Process, eventually

AGENT = uuid.UUID("00000000-0000-4000-8000-00000000be4c")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="simulated calls in the backlog")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    name = f"voxagent_drain_{uuid.uuid4().hex[:8]}"
    with isolated(Settings(), name) as settings, tempfile.TemporaryDirectory() as logs:
        ensure_topics(settings, domain_topics(settings))
        procs = [Process(n, settings, Path(logs)).start() for n in ("ingest", "relay")]
        container = bootstrap(settings)

        def count(query: str) -> int:
            with container.pool.connection() as conn:
                row = conn.execute(query).fetchone()
                conn.rollback()
            return int(row[0] or 0) if row else 0

        try:
            producer = build_producer(settings)
            topic = f"{settings.topic_prefix}.ingress.worker.v1"
            total = 0
            for i in range(args.calls):
                for step in plan_call(i, seed=args.seed, space_id="drain", agent_id=AGENT):
                    data = {**step.data, "at": iso_ms(datetime.now(UTC))}
                    while True:
                        try:
                            producer.produce(topic, json.dumps(data).encode(),
                                             data["call_id"].encode())  # fmt: skip
                            break
                        except BufferError:
                            producer.poll(0.01)
                    total += 1
            producer.flush(60)
            print(f"{total} signals of {args.calls} calls produced; ingesting...", flush=True)
            eventually(lambda: count("SELECT count(*) FROM calls_events") >= total, timeout=900,
                       what="every signal stored", processes=tuple(procs))  # fmt: skip
            time.sleep(5)  # the relay's last batches
            projector = Process("projector", settings, Path(logs)).start()
            procs.append(projector)
            print("backlog in the calls topic; projector started", flush=True)
            eventually(lambda: count("SELECT count(*) FROM calls") > 0, timeout=180,
                       what="a first projected row", processes=(projector,))  # fmt: skip
            start, cpu_start = time.perf_counter(), cpu_seconds(projector.proc.pid)
            first = count("SELECT sum(version) FROM calls")
            eventually(lambda: count("SELECT sum(version) FROM calls") >= total, timeout=900,
                       what="the backlog projected", processes=(projector,))  # fmt: skip
            seconds = time.perf_counter() - start
            cpu = cpu_seconds(projector.proc.pid) - cpu_start
        finally:
            for p in procs:
                p.stop()
            container.close()
    measured = total - first
    print(json.dumps({
        "bench": "projector_drain", "calls": args.calls, "signals": total, "measured": measured,
        "seconds": round(seconds, 1), "events_per_s": round(measured / seconds),
        "projector_cpu_pct": round(100 * cpu / seconds),
        "projector_cpu_ms_per_1000": round(1_000_000 * cpu / measured),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
