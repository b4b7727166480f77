"""Chaos benchmark (issue 11): the platform under steady load (agent commands, simulated calls,
webhooks) while Kafka is stopped for 30 s, then PostgreSQL for 30 s, then ClickHouse for 60 s,
then each platform process is killed with -9 in turn (and restarted 2 s later).

It runs a stack of its own (``.stack/chaos``, other ports), so the local stack and a running
``make up`` are never touched. Prints progress, a table per step, and ends with one line of
JSON: ``lost``, ``duplicated``, ``max_recovery_s`` (service back -> backlog drained),
``drain_ratio`` (the slowest step's drain rate over the offered rate), and the details.

    .venv/bin/python bench/chaos.py
    .venv/bin/python bench/chaos.py --kafka 10 --postgres 10 --clickhouse 10   # a short run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.settings import Settings
from tests.support.chaos import PROCESSES, ChaosRun, Plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kafka", type=float, default=30.0, help="seconds Kafka stays down")
    parser.add_argument("--postgres", type=float, default=30.0, help="seconds PostgreSQL is down")
    parser.add_argument("--clickhouse", type=float, default=60.0, help="seconds ClickHouse is down")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--agents-per-second", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=10, help="concurrent simulated calls")
    parser.add_argument("--no-kills", action="store_true", help="skip the kill -9 steps")
    args = parser.parse_args()
    plan = Plan(
        warmup=args.warmup,
        outages=tuple(
            (service, seconds)
            for service, seconds in (
                ("kafka", args.kafka),
                ("postgres", args.postgres),
                ("clickhouse", args.clickhouse),
            )
            if seconds > 0
        ),
        kills=() if args.no_kills else PROCESSES,
        agents_per_second=args.agents_per_second,
        concurrent_calls=args.calls,
        echo=lambda line: print(line, flush=True),
    )
    logs = Path(tempfile.mkdtemp(prefix="voxagent-chaos-"))
    print(f"[chaos] logs of the platform's processes: {logs}", flush=True)
    with ChaosRun(Settings(), plan, logs).running() as run:
        report = run.run()
    print(f"\n{'step':<28}{'peak backlog':>14}{'recovered (s)':>15}{'health named it':>17}")
    for step in report.steps:
        took = f"{step.recovered - step.restored:.1f}" if step.recovered else "never"
        named = "" if step.health_named_down is None else str(step.health_named_down)
        print(f"{step.name:<28}{step.peak_backlog:>14}{took:>15}{named:>17}")
    for step in report.steps:
        if step.statuses_while_down:
            print(f"API answers while {step.name}: {step.statuses_while_down}")
    figures = report.figures()
    figures["machine"] = f"{platform.machine()} {platform.processor() or ''} cpus=2".strip()
    print(json.dumps(figures, separators=(",", ":")))


if __name__ == "__main__":
    main()
