"""Isolation benchmark: one space's read-your-writes waits against another space's plain reads.

A real API process (``voxagent api``, uvicorn) runs on the local stack in databases of its own,
with a loopback JWKS issuer. A victim space holds a few agents; an attacker space holds one agent.
After a baseline (the victim alone), attacker clients (in a process of their own, so the victim's
client is not slowed by them) loop ``GET /api/agents/{id}?min_version=<never reached>`` with
``--attackers`` requests in flight, while the victim keeps reading ``GET /api/agents`` and
``GET /api/agents/{id}`` one request at a time over a kept-alive connection. Latency is measured
client-side per request, over real HTTP.

No relay or projector runs: the agents reach the read model through the in-process runner, once,
before the measurement (the attacker's version is never reached, which is the point).

Ends with one line of JSON (DESIGN §8): ``victim_p99_ms`` (target <= 50) and
``baseline_p99_ms`` among others.

    .venv/bin/python bench/isolation.py --attackers 80 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench.procstat import machine_ticks, percent, process_ticks  # noqa: E402
from bench.stats import percentile
from infra.bootstrap import bootstrap  # noqa: E402
from infra.settings import Settings  # noqa: E402
from projections.runner import InProcessRunner  # noqa: E402
from tests.support.databases import isolated  # noqa: E402
from tests.support.jwt import JwksServer  # noqa: E402
from tests.support.processes import Process, eventually  # noqa: E402

NEVER = 1_000_000_000  # a version the attacker's agent never reaches


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the attacker, in a process of its own ------------------------------------------------------
def attack(
    base: str, headers: dict[str, str], agent_id: str, clients: int, stop: Any, out: Any
) -> None:
    """``clients`` loops, each one wait at a time, until ``stop`` (a multiprocessing Event)."""

    async def main() -> Counter[str]:
        statuses: Counter[str] = Counter()
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

            async def loop() -> None:
                url = f"/api/agents/{agent_id}"
                while not stop.is_set():
                    try:
                        resp = await client.get(url, params={"min_version": NEVER}, headers=headers)
                        statuses[str(resp.status_code)] += 1
                        if resp.status_code == 429:  # as a well-behaved client would
                            await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1
                        await asyncio.sleep(0.1)

            await asyncio.gather(*(loop() for _ in range(clients)))
        return statuses

    out.put(dict(asyncio.run(main())))


# -- the victim ----------------------------------------------------------------------------------
def victim(
    client: httpx.Client, agent_id: str, seconds: float, pause: float
) -> dict[str, list[float]]:
    """Plain reads, one at a time, for ``seconds``: latency (ms) per route."""
    got: dict[str, list[float]] = {"list": [], "get": []}
    paths = {"list": "/api/agents", "get": f"/api/agents/{agent_id}"}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for route, path in paths.items():
            began = time.perf_counter()
            resp = client.get(path)
            took = (time.perf_counter() - began) * 1000
            if resp.status_code != 200:
                raise RuntimeError(f"victim {path} answered {resp.status_code}: {resp.text}")
            got[route].append(took)
        time.sleep(pause)
    return got


class Cpu:
    """CPU used since it was made (% of one core): the API process's and the machine's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.began, self.api, self.machine = (
            time.monotonic(),
            process_ticks(pid),
            machine_ticks()[0],
        )

    def since(self) -> tuple[float, float]:
        seconds = time.monotonic() - self.began
        api = percent(process_ticks(self.pid) - self.api, seconds)
        return api, percent(machine_ticks()[0] - self.machine, seconds)


def summary(samples: dict[str, list[float]]) -> dict[str, float]:
    every = [v for values in samples.values() for v in values]
    return {
        "n": len(every),
        "p50": percentile(every, 50),
        "p95": percentile(every, 95),
        "p99": percentile(every, 99),
        "max": max(every, default=float("nan")),
    }


def table(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    lines = [
        f"{'phase':<9} {'route':<22} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8}"
    ]
    for phase, route, s in rows:
        lines.append(
            f"{phase:<9} {route:<22} {s['n']:>6} {s['p50']:>8.1f} {s['p95']:>8.1f} "
            f"{s['p99']:>8.1f} {s['max']:>8.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attackers", type=int, default=80, help="waits in flight")
    parser.add_argument("--duration", type=float, default=30.0, help="measured attack, seconds")
    parser.add_argument("--baseline", type=float, default=10.0, help="victim alone, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="attack before measuring")
    parser.add_argument("--pause", type=float, default=0.02, help="victim pause between pairs")
    parser.add_argument("--victim-agents", type=int, default=20)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        JwksServer() as issuer,
        isolated(Settings(), f"bench_isolation_{run}") as settings,
        tempfile.TemporaryDirectory() as logs,
    ):
        env = {
            "VOXAGENT_API__PORT": str(port),
            "VOXAGENT_AUTH__JWKS_URL": issuer.url,
            "VOXAGENT_AUTH__ISSUER": issuer.issuer,
            "VOXAGENT_AUTH__AUDIENCE": issuer.audience,
            "VOXAGENT_LOG_LEVEL": "WARNING",
        }
        api = Process("api", settings, Path(logs), env=env).start()
        try:

            def up() -> bool:
                try:
                    return httpx.get(f"{base}/health", timeout=2).status_code < 600
                except httpx.HTTPError:
                    return False

            eventually(up, timeout=90, what="the API answering", processes=(api,))
            v_headers = issuer.headers(f"victim-{run}")
            a_headers = issuer.headers(f"attacker-{run}")
            with httpx.Client(base_url=base, timeout=30) as client:
                ids = []
                for i in range(args.victim_agents):
                    body = {"name": f"Victim {i}", "system_prompt": "Be kind."}
                    resp = client.post("/api/agents", json=body, headers=v_headers)
                    resp.raise_for_status()
                    ids.append(resp.json()["id"])
                resp = client.post("/api/agents", json={"name": "Attacker"}, headers=a_headers)
                resp.raise_for_status()
                attacker_agent = resp.json()["id"]
            container = bootstrap(settings)
            try:
                InProcessRunner(container.agents, container.pool).run_until_caught_up()
            finally:
                container.close()
            victim_agent = ids[0]
            print(f"API pid {api.proc.pid if api.proc else '?'} on {base}; agents projected",
                  flush=True)  # fmt: skip

            # one kept-alive connection for the victim, opened before the baseline
            vclient = httpx.Client(base_url=base, headers=v_headers, timeout=60)
            vclient.get("/api/agents").raise_for_status()
            print(f"baseline: victim alone for {args.baseline:.0f} s", flush=True)
            pid = api.proc.pid if api.proc else 0
            cpu = Cpu(pid)
            baseline = victim(vclient, victim_agent, args.baseline, args.pause)
            cpu_baseline = cpu.since()

            print(f"attack: {args.attackers} waits in flight, warm-up {args.warmup:.0f} s, "
                  f"measured {args.duration:.0f} s", flush=True)  # fmt: skip
            ctx = mp.get_context("spawn")
            out, stop = ctx.Queue(), ctx.Event()
            attacker = ctx.Process(
                target=attack,
                args=(base, a_headers, attacker_agent, args.attackers, stop, out),
                daemon=True,
            )
            attacker.start()
            time.sleep(args.warmup)
            measured: dict[str, list[float]] = {}
            done = threading.Event()
            began = time.monotonic()
            cpu = Cpu(pid)

            def measure() -> None:
                measured.update(victim(vclient, victim_agent, args.duration, args.pause))
                done.set()

            threading.Thread(target=measure, daemon=True).start()
            while not done.wait(5):
                print(f"  ... attack running, {time.monotonic() - began:.0f} s", flush=True)
            stop.set()  # the attack lasts until the last victim read has answered
            cpu_attack = cpu.since()
            statuses = out.get(timeout=120)
            attacker.join(timeout=30)
            vclient.close()
        finally:
            api.stop()

    rows = [
        ("baseline", "GET /api/agents", summary({"list": baseline["list"]})),
        ("baseline", "GET /api/agents/{id}", summary({"get": baseline["get"]})),
        ("attack", "GET /api/agents", summary({"list": measured["list"]})),
        ("attack", "GET /api/agents/{id}", summary({"get": measured["get"]})),
    ]
    print()
    print(table(rows))
    print(f"attacker answers: {dict(sorted(statuses.items()))}")
    print(f"CPU, % of one core: API process {cpu_baseline[0]:.0f} alone, {cpu_attack[0]:.0f} "
          f"under attack; machine ({os.cpu_count()} cores) {cpu_baseline[1]:.0f} alone, "
          f"{cpu_attack[1]:.0f} under attack")  # fmt: skip
    before, during = summary(baseline), summary(measured)
    print(json.dumps({
        "bench": "isolation",
        "attackers": args.attackers,
        "duration_s": args.duration,
        "victim_requests": during["n"],
        "victim_p50_ms": round(during["p50"], 1),
        "victim_p99_ms": round(during["p99"], 1),
        "victim_max_ms": round(during["max"], 1),
        "baseline_p50_ms": round(before["p50"], 1),
        "baseline_p99_ms": round(before["p99"], 1),
        "attack_requests": sum(statuses.values()),
        "attack_statuses": dict(sorted(statuses.items())),
        "api_cpu_pct_baseline": round(cpu_baseline[0]),
        "api_cpu_pct_attack": round(cpu_attack[0]),
        "machine_cpu_pct_baseline": round(cpu_baseline[1]),
        "machine_cpu_pct_attack": round(cpu_attack[1]),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
