"""Bridge benchmark: N concurrent synthetic Twilio Media Streams through ``voxagent bridge`` into
LiveKit; added latency per frame, outbound pacing jitter, CPU per stream, streams per core.

The script starts its own ``voxagent bridge`` (a free port, default settings otherwise: the
stream secret is this process's ``Settings()``'s) against the local stack's LiveKit server
(``voxagent stack up``). Per stream it creates a LiveKit room with the server API (no agent
dispatch: no worker runs here), signs a stream token for ``twilio_media_streams``
(``adapters.telephony.tokens.issue``) and opens a stream (``--ramp`` new streams a second) with
``call_id`` and ``token`` as its custom parameters; the load generator
(``bench/bridge_load.py``, in this process) sends each stream 20 ms of mu-law every 20 ms on
one shared clock from its ``start`` on, as Twilio does, and reads what comes back.

Two agent modes (``--agent``; both by default, one after the other):

* ``silent``: the helper (below) is in every room as a silent agent that subscribes to the
  caller, as every call's agent does (the bridge sends a caller's audio only once someone in
  the room listens). Only the inbound path works (decode, resample to 48 kHz, hand the frame
  to the rtc SDK's ``AudioSource``); the pacer idles.
* ``tone``: a helper process (``bench/bridge_tone.py``; its CPU is not the bridge's) joins
  every room and publishes a continuous speech-like 48 kHz signal, so the bridge also
  subscribes, decodes (Opus, natively), resamples to 8 kHz, encodes mu-law and paces 20 ms
  frames back: a call whose agent never stops talking, the bridge's full duplex load.

The headline figures come from ``tone``: the issue asks for the added latency *and* the
outbound pacing jitter and the streams one core sustains; only with agent audio flowing is
the jitter measured at all, and a bridge that holds N streams only while the agents are
silent does not hold N calls. ``silent`` is the inbound path alone, for comparison.

Per step of the ladder (``--streams``, added to the streams already open; a repeated N
measures the same streams again): wait until the bridge has started every stream (and, with
``tone``, every stream hears the agent), ``--warmup`` seconds, ``POST /stats/reset``, then
``--seconds`` of measurement:

* the bridge's ``/stats``: ``inbound_latency`` is the *added latency per frame* as the issue
  defines it (a caller media message received on the socket -> its frame handed to LiveKit,
  per frame), ``outbound_latency`` (an agent frame from LiveKit -> sent to the provider;
  includes its wait in the pacer's queue), ``pacing_jitter`` (|interval - 20 ms| between
  consecutive paced sends of a stream);
* end to end, from outside (``--probes`` streams, 4 by default): those streams carry faint
  noise with a 20 ms marker once a second, the helper subscribes to their caller tracks in
  LiveKit and notes each marker's onset; caller marker sent -> heard in the room (one
  machine, one monotonic clock). This sees what ``inbound_latency`` cannot: audio waiting in
  a socket or in the SDK's source queue before it reaches WebRTC. For comparison, the same
  markers on a path without the bridge (the helper publishes them into a room of its own and
  hears them back): Opus, WebRTC, the SFU and the listener's jitter buffer;
* CPU from /proc over the window: the bridge process (all threads; per stream; per thread
  name: the main thread runs the event loop, the rtc SDK's native threads also run its Python
  event callbacks), the helper, this process (the load generator), livekit-server, everything
  else on the machine (named, when someone else's work is running);
* the client side: frames received back vs expected, inter-arrival jitter, gaps, the load
  generator's clock lateness, streams closed (and their close codes), frames it could not
  send because the bridge was not reading; the bridge's counters (refused, protocol errors,
  crashes) and the WARNING/ERROR lines it logged in the window.

A step passes when inbound p99 <= ``--p99-ms`` (10), the bridge's CPU <= 100% of one core,
and every stream is up (socket open, the bridge counts it active, none crashed or refused;
with ``tone``, each got >= half its expected frames). ``streams_per_core`` = the largest
passing N (measured, never extrapolated). The ladder stops one step after the first miss.

``--profile DIR``: a separate mode (no early stop; sampling costs the bridge some CPU): at
each given N, during the window, py-spy (``--nonblocking``; ``--spy-arg=--native`` stops the
process per sample, which starves the streams) records the bridge's Python side as raw text
(summarized: busy share per thread, top functions by own samples, the rtc SDK's event
fan-out) and perf records every thread (native code by thread name, library and symbol);
then py-spy draws a flamegraph for as long again (``bridge-<mode>-<N>.svg``).

Options for a cleaner or a comparative reading: ``--pin`` gives the bridge core 0 and puts this
process and the helper on the other cores (on a small machine the bridge otherwise competes
with its own load; LiveKit and the rest of the machine are not moved); ``--bridge-tree DIR``
runs the bridge from another source tree (before/after a change); ``--media-delay S`` holds
each stream's media until S s after its ``start`` (unlike Twilio) so the bridge has joined
the room before audio arrives; ``--fresh-probes`` re-subscribes the listener before each step
(a fresh jitter buffer on its side).

Ends with one line of JSON (DESIGN §8): ``added_latency_p50_ms``, ``added_latency_p99_ms`` and
``jitter_ms`` (pacing p99) at ``streams_per_core`` (at the first step if none passed), then
every step, and the code measured (commit, uncommitted files).

    .venv/bin/python bench/bridge.py
    .venv/bin/python bench/bridge.py --agent tone --streams 10,50 --seconds 10
    .venv/bin/python bench/bridge.py --agent tone --streams 20,40 --profile /tmp/bridge-prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procstat
from bench.bridge_load import FRAME_MS, Load, Stream
from bench.bridge_procs import Bridge, Helper, Rooms
from bench.bridge_report import Step, code_state, report, summary_line

DEFAULT_STEPS = "10,25,50,100,150,200,250,300,400"
CHANNEL = "twilio_media_streams"


OTHER_CORES = set(range(1, os.cpu_count() or 2))


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of ``pid`` (and so the threads it starts later) on ``cores`` only."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cores)


def end_to_end(probes: list[tuple[list[float], str]], onsets: dict[str, list[float]],
               t0: float, t1: float) -> dict[str, Any] | None:  # fmt: skip
    """Marker sent -> its onset heard in the room, for each (markers, room) of ``probes`` and
    the markers sent in the window (up to 1 s before its end); a marker heard later than 1 s,
    or never, is lost."""
    if not probes:
        return None
    latencies, lost, per_probe = [], 0, []
    for markers, room in probes:
        heard = sorted(onsets.get(room, []))
        mine = []
        for sent in markers:
            if not t0 <= sent <= t1 - 1.0:
                continue
            match = next((o for o in heard if sent <= o < sent + 1.0), None)
            if match is None:
                lost += 1
            else:
                mine.append((match - sent) * 1000)
        latencies += mine
        per_probe.append(round(sorted(mine)[len(mine) // 2], 1) if mine else None)
    latencies.sort()

    def at(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 1) if (
            latencies) else None  # fmt: skip

    return {"markers": len(latencies) + lost, "lost": lost, "p50_ms": at(50), "p99_ms": at(99),
            "max_ms": round(latencies[-1], 1) if latencies else None,
            "p50_ms_per_probe": per_probe}  # fmt: skip


def diff_counters(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


async def wait_started(bridge: Bridge, load: Load, target: int, tone: bool) -> None:
    """Until the bridge has started ``target`` streams (cumulative counter) and, with the tone
    agent, every open stream has heard it."""
    deadline = time.monotonic() + 60 + len(load.streams) / 5
    while True:
        try:
            stats = await bridge.stats()
        except (TimeoutError, OSError) as exc:
            log(f"  ! the bridge's /stats did not answer ({type(exc).__name__}); waiting on")
            stats = {"counters": {}}
        started = stats["counters"].get("streams_started", 0)
        deaf = sum(1 for s in load.streams if s.open and not s.frames_in) if tone else 0
        if started >= target and not deaf:
            return
        if time.monotonic() > deadline:
            log(f"  ! only {started}/{target} streams started, {deaf} hear nothing; going on")
            return
        await asyncio.sleep(0.5)


async def run_mode(mode: str, args: Any, settings: Any, bridge: Bridge, logs: Path,
                   steps: list[int], results: list[Step]) -> None:  # fmt: skip
    """The ladder in one agent mode; each measured step joins ``results`` as it ends."""
    from adapters.telephony import tokens

    secret = settings.telephony.stream_secret.get_secret_value()
    rooms = Rooms(settings, f"benchbridge-{mode}-{uuid.uuid4().hex[:6]}")
    load = Load(bridge.url, media_delay=args.media_delay)
    agent = mode == "tone"
    helper = Helper(logs, args.tone_frame_ms)  # the agent in every room, silent or not
    if args.pin:
        pin(helper.proc.pid, OTHER_CORES)
    pids = {"bridge": bridge.pid, "loadgen": os.getpid()}
    pids["helper"] = helper.proc.pid
    probe_rooms: dict[Stream, str] = {}
    reference_room = None
    for pid in procstat.pids_named("livekit-server")[:1]:
        pids["livekit"] = pid
    first_miss: int | None = None
    try:
        if args.probes:
            reference_room = (await rooms.create(1))[0]
            await helper.ask({"reference": reference_room})
        started_before = (await bridge.stats())["counters"].get("streams_started", 0)
        for n in steps:
            if n < len(load.streams):
                continue  # a step repeated (e.g. 50,50) measures the same streams again
            new = n - len(load.streams)
            log(f"[{mode} N={n}] creating {new} rooms")
            names = await rooms.create(new) if new else []
            probes = names[: max(0, args.probes - len(probe_rooms))]
            if names:
                answer = await helper.ask({"join": names, "publish": agent},
                                          timeout=60 + 2 * len(names))  # fmt: skip
                failed = f"; failed: {answer['failed'][:3]}" if answer["failed"] else ""
                log(f"[{mode} N={n}] helper in {answer['joined']} rooms "
                    f"({answer['seconds']} s){failed}")  # fmt: skip
                await helper.ask({"probe": probes})
            log(f"[{mode} N={n}] opening {new} streams, {args.ramp:g} a second")
            opened = time.monotonic()

            async def open_one(index: int, name: str, delay: float, probe: bool) -> None:
                await asyncio.sleep(delay)
                call_id = f"call-{name}"
                grant = tokens.StreamGrant(call_id=call_id, space_id="benchbridge",
                                           agent_id="bench", agent_config_version=1,
                                           room_name=name, channel=CHANNEL)  # fmt: skip
                token = tokens.issue(grant, secret, 600)
                stream = await load.open(index, {"call_id": call_id, "token": token},
                                         probe=probe)  # fmt: skip
                if stream.probe:
                    probe_rooms[stream] = name

            base = len(load.streams)
            await asyncio.gather(*(open_one(base + i, name, i / args.ramp, name in probes)
                                   for i, name in enumerate(names)))  # fmt: skip
            await wait_started(bridge, load, started_before + n, agent)
            joins = sorted(s.first_in_at - s.opened_at for s in load.streams[base:]
                           if s.first_in_at)  # fmt: skip
            join = (f"; open -> first frame back p50 {joins[len(joins) // 2]:.1f} s, max "
                    f"{joins[-1]:.1f} s" if joins else "")  # fmt: skip
            log(f"[{mode} N={n}] {n} streams up in {time.monotonic() - opened:.1f} s{join}; "
                f"warm-up {args.warmup:g} s")  # fmt: skip
            if args.fresh_probes and probe_rooms:
                await helper.ask({"probe": [r for r in probe_rooms.values() if r not in probes]})
            await asyncio.sleep(args.warmup)
            step = await asyncio.wait_for(
                measure(mode, n, args, bridge, load, helper, probe_rooms, reference_room, pids),
                timeout=3 * args.seconds + 180,
            )
            results.append(step)
            log(f"[{mode} N={n}] {summary_line(step)}")
            if not step.passed and first_miss is None:
                first_miss = n
            elif first_miss is not None and not args.profile:
                break  # one step past the limit shows the trend
    finally:
        log(f"[{mode}] closing {len(load.streams)} streams")
        await load.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError, OSError):
                if (await bridge.stats(attempts=1))["active_streams"] == 0:
                    break
            await asyncio.sleep(0.5)
        await helper.stop()
        await rooms.delete_all()


async def measure(mode: str, n: int, args: Any, bridge: Bridge, load: Load, helper: Helper | None,
                  probe_rooms: dict[Stream, str], reference_room: str | None,
                  pids: dict[str, int]) -> Step:  # fmt: skip
    from bench import bridge_profile

    agent = mode == "tone"
    try:
        counters_before = (await bridge.stats())["counters"]
        await bridge.reset()
    except (TimeoutError, OSError):
        counters_before = {}  # the bridge is too busy to answer: the step is missed anyway
    if helper is not None and probe_rooms:
        await helper.ask({"onsets": True})  # forget the warm-up's
    load.reset_window()
    log_from = bridge.log_size()
    t0 = time.monotonic()
    frames_before = {s: s.frames_in for s in load.streams}
    gaps_before = sum(s.gaps_in for s in load.streams)
    resyncs_before = load.resyncs
    cpu = procstat.Window(pids)
    spy = None
    perf = None
    if args.profile:
        raw = args.profile / f"bridge-{mode}-{n}.txt"
        spy = bridge_profile.record(bridge.pid, args.seconds, raw, "raw", args.spy_arg)
        perf_data = args.profile / f"bridge-{mode}-{n}.perf.data"
        perf = bridge_profile.perf_record(bridge.pid, args.seconds, perf_data)
        await asyncio.to_thread(spy.wait)
        if perf is not None:
            await asyncio.to_thread(perf.wait)
    else:
        await asyncio.sleep(args.seconds)
    used, threads = cpu.since()
    window = time.monotonic() - cpu.started
    try:
        stats = await bridge.stats()
    except (TimeoutError, OSError):
        blank = {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
        stats = {"active_streams": -1, "counters": counters_before, "inbound_latency": blank,
                 "outbound_latency": blank, "pacing_jitter": blank, "unanswered": True}  # fmt: skip
    t1 = time.monotonic()
    helper_stats = await helper.ask({"stats": True}) if helper is not None else None
    onsets = await helper.ask({"onsets": True}) if helper is not None and probe_rooms else {}
    e2e = end_to_end([(s.markers, room) for s, room in probe_rooms.items()], onsets, t0, t1)
    reference = end_to_end([(onsets.get("reference_markers", []), reference_room)], onsets, t0,
                           t1) if reference_room else None  # fmt: skip
    warnings = bridge.warnings_since(log_from)
    expected = window * 1000 / FRAME_MS
    got = {s: s.frames_in - frames_before.get(s, 0) for s in load.streams}
    closed = sum(1 for s in load.streams if not s.open)
    starved = sum(1 for v in got.values() if v < expected / 2) if agent else 0
    counters = diff_counters(counters_before, stats["counters"])
    up = {
        "open_client": len(load.streams) - closed, "closed_client": closed,
        "active_bridge": stats["active_streams"], "starved": starved,
        "crashed": counters.get("stream_crashed", 0),
        "refused": sum(v for k, v in counters.items() if k.startswith("refused")),
        "protocol_errors": sum(v for k, v in counters.items() if k.startswith("protocol_error")),
    }  # fmt: skip
    client = {
        "frames_back_pct": round(100 * sum(got.values()) / (expected * len(got)), 1)
        if agent else None, "end_to_end": e2e, "end_to_end_without_bridge": reference,
        "bridge_log_warnings": warnings,
        "jitter_p50_ms": load.jitter.percentile(50), "jitter_p99_ms": load.jitter.percentile(99),
        "gaps": sum(s.gaps_in for s in load.streams) - gaps_before,
        "bad_frames": sum(s.bad_in for s in load.streams),
        "clock_late_p99_ms": load.late.percentile(99),
        "clock_resyncs": load.resyncs - resyncs_before,
        "send_errors": load.send_errors, "helper": helper_stats,
        "skipped_frames": sum(s.skipped for s in load.streams),
        "close_codes": sorted({s.close_code for s in load.streams if not s.open}, key=str),
        "bridge_rss_mib": procstat.rss_mib(bridge.pid), "top_other_processes": cpu.top_others,
    }  # fmt: skip
    inbound_p99 = stats["inbound_latency"]["p99_ms"]
    missed = ["the bridge's /stats did not answer"] if stats.get("unanswered") else []
    if inbound_p99 is None or inbound_p99 > args.p99_ms:
        missed.append(f"inbound p99 {inbound_p99} ms > {args.p99_ms:g}")
    if used["bridge"] > 100:
        missed.append(f"bridge CPU {used['bridge']:.0f}% > 100% of a core")
    down = closed + starved + up["crashed"] + up["refused"] + abs(stats["active_streams"] - n)
    if down:
        missed.append(f"streams not all up ({up})")
    profile = None
    if spy is not None:
        _, err = spy.communicate()
        raw = args.profile / f"bridge-{mode}-{n}.txt"
        profile = bridge_profile.summarize(raw, args.seconds) if raw.exists() else {"error": err}
        svg = args.profile / f"bridge-{mode}-{n}.svg"
        log(f"[{mode} N={n}] flamegraph for {args.seconds:g} s more -> {svg}")
        flame = bridge_profile.record(bridge.pid, args.seconds, svg, "flamegraph", args.spy_arg)
        await asyncio.to_thread(flame.wait)
        profile["files"] = [str(raw), str(svg)]
        if perf is not None and perf_data.exists():
            profile["perf"] = bridge_profile.perf_summary(perf_data, args.seconds)
            profile["files"].append(str(perf_data))
            if not profile["perf"]["pct_by_thread_name"]:
                profile["perf"]["error"] = (perf.stderr.read() if perf.stderr else "")[-300:]
    stats["pacer_resyncs"] = stats.get("pacer_resyncs", 0)
    return Step(mode, n, round(window, 1), stats, used, threads, client, counters, up,
                not missed, missed, profile)  # fmt: skip


async def amain(args: Any) -> dict[str, Any]:
    from infra.settings import Settings

    settings = Settings()
    steps = [int(v) for v in args.streams.split(",")]
    modes = ["silent", "tone"] if args.agent == "both" else [args.agent]
    if args.pin:  # the bridge gets core 0 to itself (as far as we decide): this process and
        pin(os.getpid(), OTHER_CORES)  # the helper run on the others
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):  # clean up, and report what was measured
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    results: dict[str, list[Step]] = {}
    code = code_state(args.bridge_tree)  # what the bridge processes load
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        log(f"bridge bench: agent {modes}, steps {steps}, {args.seconds:g} s windows, "
            f"warm-up {args.warmup:g} s; LiveKit {settings.livekit.url}; logs in {logs}; "
            f"load generator pid {os.getpid()}")  # fmt: skip
        for mode in modes:  # a fresh bridge per mode: an overloaded one leaves nothing behind
            bridge = Bridge(settings, logs, max(steps) + 50, args.bridge_tree, f"bridge-{mode}")
            results[mode] = []
            try:
                await bridge.start()
                log(f"[{mode}] bridge pid {bridge.pid} on port {bridge.port}")
                if args.pin:
                    pin(bridge.pid, {0})
                await run_mode(mode, args, settings, bridge, logs, steps, results[mode])
            except asyncio.CancelledError:
                log(f"[{mode}] interrupted: reporting the steps measured so far")
                break
            except Exception as exc:  # noqa: BLE001 - report what was measured
                log(f"[{mode}] stopped early ({type(exc).__name__}: {exc})")
            finally:
                await bridge.stop()
                log(f"[{mode}] bridge log: {bridge.warnings_since(0)}")
    return report(args, {mode: steps for mode, steps in results.items() if steps}, code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default=DEFAULT_STEPS, help="the ladder, e.g. 10,25,50")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before each window")
    parser.add_argument("--agent", choices=("silent", "tone", "both"), default="both")
    parser.add_argument("--ramp", type=float, default=10.0,
                        help="new streams opened per second")  # fmt: skip
    parser.add_argument("--probes", type=int, default=4,
                        help="streams that carry markers to time the caller's audio end to "
                        "end (0: none)")  # fmt: skip
    parser.add_argument("--fresh-probes", action="store_true",
                        help="re-subscribe the observer to the probes before each step's "
                        "warm-up (a fresh jitter buffer on the observer's side)")  # fmt: skip
    parser.add_argument("--media-delay", type=float, default=0.0,
                        help="seconds from a stream's start to its first media (Twilio "
                        "sends at once; a delay lets the bridge join the room first)")  # fmt: skip
    parser.add_argument("--p99-ms", type=float, default=10.0, help="inbound p99 limit")
    parser.add_argument("--tone-frame-ms", type=int, default=100,
                        help="audio per capture in the tone process")  # fmt: skip
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the bridge at each step into this directory (no early "
                        "stop; figures are under the profiler)")  # fmt: skip
    parser.add_argument(
        "--spy-arg",
        action="append",
        default=[],
        help="an extra py-spy record option (write --spy-arg=--gil)",
    )
    parser.add_argument("--pin", action="store_true",
                        help="the bridge on core 0, this process and the helper on the other "
                        "cores (LiveKit and the rest of the machine are not moved)")  # fmt: skip
    parser.add_argument("--bridge-tree", type=Path, default=None,
                        help="run the bridge from this source tree instead (e.g. an older "
                        "commit: git archive <rev> | tar -x -C DIR), for before/after")  # fmt: skip
    parser.add_argument("--logs", type=Path, default=None, help="keep the logs here")
    args = parser.parse_args()
    out = asyncio.run(amain(args))
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
