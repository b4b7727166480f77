"""A step of ``bench/bridge.py``'s ladder, its tables and its JSON."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bridge_profile import profile_text

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    mode: str
    streams: int
    seconds: float
    bridge: dict[str, Any]  # /stats of the window
    cpu: dict[str, float]
    threads: dict[str, float]
    client: dict[str, Any]
    counters: dict[str, int]
    up: dict[str, int]
    passed: bool
    missed: list[str]
    profile: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        b = self.bridge
        return {
            "streams": self.streams, "passed": self.passed, "missed": self.missed,
            "inbound_p50_ms": b["inbound_latency"]["p50_ms"],
            "inbound_p99_ms": b["inbound_latency"]["p99_ms"],
            "inbound_max_ms": b["inbound_latency"]["max_ms"],
            "inbound_frames": b["inbound_latency"]["count"],
            "outbound_p50_ms": b["outbound_latency"]["p50_ms"],
            "outbound_p99_ms": b["outbound_latency"]["p99_ms"],
            "pacing_jitter_p50_ms": b["pacing_jitter"]["p50_ms"],
            "pacing_jitter_p99_ms": b["pacing_jitter"]["p99_ms"],
            "pacing_jitter_max_ms": b["pacing_jitter"]["max_ms"],
            "pacer_resyncs": b["pacer_resyncs"],
            "cpu_pct": self.cpu, "bridge_threads_pct": self.threads, "client": self.client,
            "counters": self.counters, "up": self.up,
            **({"profile": self.profile} if self.profile else {}),
        }  # fmt: skip


def summary_line(s: Step) -> str:
    r = s.row()
    e2e, warnings = s.client["end_to_end"] or {}, s.client["bridge_log_warnings"]
    ref = s.client["end_to_end_without_bridge"] or {}
    return (f"in p50/p99 {r['inbound_p50_ms']}/{r['inbound_p99_ms']} ms, e2e p50/p99 "
            f"{e2e.get('p50_ms')}/{e2e.get('p99_ms')} ms (lost {e2e.get('lost')}; without the "
            f"bridge {ref.get('p50_ms')}/{ref.get('p99_ms')} ms), pacing p99 "
            f"{r['pacing_jitter_p99_ms']} ms, bridge CPU {s.cpu['bridge']:.0f}% "
            f"({s.cpu['bridge'] / s.streams:.2f}%/stream), main thread "
            f"{s.threads.get('main thread (event loop)', 0):.0f}%, machine {s.cpu['machine']:.0f}%"
            f" (others {s.cpu['others']:.0f}%: {', '.join(s.client['top_other_processes'])})"
            f"; bridge log: {warnings['count']} warnings"
            f" -> {'PASS' if s.passed else 'MISS: ' + '; '.join(s.missed)}")  # fmt: skip


def table(steps: list[Step]) -> list[str]:
    head = ("| N | in p50 | in p99 | in max | e2e p50 | e2e p99 | e2e lost | e2e w/o bridge p50 "
            "| out p50 | out p99 | pacing p50 | pacing p99 | pacing max | client jitter p99 | "
            "frames back | bridge CPU | per stream | main thread | other threads | helper | "
            "loadgen | livekit | others | machine | bridge warnings | up | pass |")  # fmt: skip
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]

    def ms(v: Any) -> str:
        return "–" if v is None else f"{v:g} ms"

    for s in steps:
        r, c = s.row(), s.cpu
        main = s.threads.get("main thread (event loop)", 0)
        rtc = sum(v for k, v in s.threads.items() if k != "main thread (event loop)")
        fb = s.client["frames_back_pct"]
        e2e = s.client["end_to_end"] or {}
        ref = s.client["end_to_end_without_bridge"] or {}
        lines.append(
            f"| {s.streams} | {ms(r['inbound_p50_ms'])} | {ms(r['inbound_p99_ms'])} | "
            f"{ms(r['inbound_max_ms'])} | {ms(e2e.get('p50_ms'))} | {ms(e2e.get('p99_ms'))} | "
            f"{e2e.get('lost', '–')}/{e2e.get('markers', '–')} | {ms(ref.get('p50_ms'))} | "
            f"{ms(r['outbound_p50_ms'])} | "
            f"{ms(r['outbound_p99_ms'])} | "
            f"{ms(r['pacing_jitter_p50_ms'])} | {ms(r['pacing_jitter_p99_ms'])} | "
            f"{ms(r['pacing_jitter_max_ms'] if r['pacing_jitter_p50_ms'] is not None else None)} | "
            f"{ms(s.client['jitter_p99_ms'])} | {'–' if fb is None else f'{fb:g}%'} | "
            f"{c['bridge']:.0f}% | {c['bridge'] / s.streams:.2f}% | {main:.0f}% | {rtc:.0f}% | "
            f"{c.get('helper', 0):.0f}% | {c['loadgen']:.0f}% | {c.get('livekit', 0):.0f}% | "
            f"{c['others']:.0f}% | {c['machine']:.0f}% | "
            f"{s.client['bridge_log_warnings']['count']} | {s.up['active_bridge']}/{s.streams} | "
            f"{'yes' if s.passed else 'no'} |"
        )  # fmt: skip
    return lines


def report(args: Any, results: dict[str, list[Step]], code: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "bridge"}
    modes: dict[str, Any] = {}
    for mode, steps in results.items():
        print(f"\n## agent: {mode} ({args.seconds:g} s windows after {args.warmup:g} s warm-up"
              f"{'; UNDER PY-SPY' if args.profile else ''})\n")  # fmt: skip
        print("\n".join(table(steps)))
        print("\nbridge CPU by thread (% of one core):")
        for s in steps:
            print(f"  N={s.streams}: " + ", ".join(f"{k} {v:g}" for k, v in s.threads.items()))
        passing = [s for s in steps if s.passed]
        best = passing[-1] if passing else None
        first_miss = next((s for s in steps if not s.passed), None)
        if first_miss is not None:
            main = first_miss.threads.get("main thread (event loop)", 0)
            bound = (
                " - event loop bound: the main thread is saturated while the process is"
                " under one core"
                if main >= 90 and first_miss.cpu["bridge"] <= 100
                else ""
            )
            print(f"\nfirst miss at N={first_miss.streams}: {'; '.join(first_miss.missed)}"
                  f" (main thread {main:.0f}%){bound}")  # fmt: skip
        for s in steps:
            if s.profile:
                print(
                    f"\nprofile of the bridge at N={s.streams} (py-spy: Python threads; perf: all):"
                )
                print(profile_text(s.profile))
        modes[mode] = {"streams_per_core": best.streams if best else 0,
                       "steps": [s.row() for s in steps]}  # fmt: skip
    headline = "tone" if "tone" in results else next(iter(results), "")
    steps = results.get(headline, [])
    passing = [s for s in steps if s.passed]
    at = passing[-1] if passing else (steps[0] if steps else None)
    if at is not None:
        r = at.row()
        out.update(added_latency_p50_ms=r["inbound_p50_ms"],
                   added_latency_p99_ms=r["inbound_p99_ms"],
                   jitter_ms=r["pacing_jitter_p99_ms"], streams_per_core=passing[-1].streams
                   if passing else 0, at_streams=at.streams, headline_mode=headline,
                   cpu_per_stream_pct=round(at.cpu["bridge"] / at.streams, 3),
                   end_to_end=at.client["end_to_end"],
                   end_to_end_without_bridge=at.client["end_to_end_without_bridge"])  # fmt: skip
    out.update(profiled=bool(args.profile), pinned=args.pin, modes=modes, seconds=args.seconds,
               code=code,
               machine={"nproc": os.cpu_count(), "python": platform.python_version(),
                        "kernel": platform.release()})  # fmt: skip
    return out


def code_state(tree: Path | None = None) -> dict[str, Any]:
    """The commit measured and the files changed since (the bridge may be mid-change), or
    the other source tree the bridge runs from."""
    if tree is not None:
        return {"tree": str(tree)}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if not line[3:].startswith("bench/")]  # fmt: skip
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": changed}
