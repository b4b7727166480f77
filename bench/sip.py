"""SIP trunk benchmark: N concurrent SIP calls into agent rooms through our SIP endpoint
(``sipd``) and the media bridge, side by side with the Twilio Media Streams path in the same run.

Three phases (``--phases``, all by default):

* ``sip``: the script starts its own ``voxagent bridge``, its own ``sipd`` (built by the local
  stack from ``sipd/``) and, as the API sipd asks, a stand-in that answers every INVITE with a
  stream into a LiveKit room of the benchmark (a real stream token, channel ``sip``; the
  platform's own ``/api/sip/invite`` is measured in the ``platform`` phase). The tone helper of
  ``bench/bridge.py`` (``bench/bridge_tone.py``) is the agent in every room: it publishes a
  continuous speech-like signal from the moment it joins, so every call has agent audio both
  ways, and it times the probes' markers in the room. The callers are ``bench/sip_ua.py``: one
  UDP user agent per call (INVITE with PCMU and telephone-event, ACK, BYE) sending 20 ms of
  mu-law every 20 ms. Per step of the ladder (``--calls``): place the new calls
  (``--ramp`` a second), wait until each hears its agent, ``--warmup``, reset the counters,
  measure ``--seconds``:
  - call setup: INVITE -> 200 OK, and INVITE -> the first RTP packet with sound (the agent's
    first audio), per call, p50/p95;
  - added media latency per frame: sipd's hop (an RTP packet in -> its payload written to the
    bridge's socket, sipd's ``/stats``) plus the bridge's (``inbound_latency``: a frame read
    from the socket -> handed to LiveKit); the p99 of the path is reported as the sum of the
    two p99s (an upper bound: the worst frame of each hop is rarely the same frame);
  - caller audio end to end (probe calls: a marker a second, heard in the room by the helper),
    the same measure as ``bench/bridge.py``'s, so the two paths compare directly;
  - CPU over the window of sipd and the bridge (both are the SIP path), per call; RTP packets
    back vs expected, inter-arrival jitter.
  A step passes when the path's added latency p99 <= ``--p99-ms`` (10), sipd + bridge use at
  most one core, and every call is up and hears its agent. ``calls_per_core`` = the largest
  passing N (measured, not extrapolated; on a 2-core machine that also runs LiveKit, the
  helper and the load generator, one core is what the path can have).
* ``twilio``: the same ladder through ``bench/bridge.py``'s tone mode (Twilio Media Streams
  into a fresh bridge), for the side-by-side table.
* ``platform``: calls to the running platform (``make up``: API, sipd, bridge, worker on their
  configured ports) from the same callers: the script provisions a space, an agent with the
  offline providers, a trunk that admits 127.0.0.1 and a number, then places ``--platform``
  concurrent calls (a comma list: one round each) and times INVITE -> 200 OK and INVITE -> the
  agent's greeting heard, through the real API, worker, STT/LLM/TTS and LiveKit.

Progress goes to stderr; the last line of stdout is JSON with ``setup_p95_ms``,
``first_audio_p95_ms`` (platform phase when run, else the SIP phase), ``added_latency_p99_ms``
and ``calls_per_core`` (SIP phase), and every step in detail.

    .venv/bin/python bench/sip.py --calls 10,25,50 --seconds 15 --platform 1,5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procstat  # noqa: E402
from bench.bridge import end_to_end, log, run_mode  # noqa: E402
from bench.bridge_load import MARKER_EVERY  # noqa: E402
from bench.bridge_procs import Bridge, Helper, Rooms  # noqa: E402
from bench.sip_ua import Callers, SipCall, caller_audio  # noqa: E402

CHANNEL = "sip"


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)


def probe_audio() -> tuple[list[bytes], bytes]:
    """Faint noise, and a 20 ms 1 kHz marker (the bridge bench's probe signal), as mu-law."""
    import binascii

    from bench.bridge_load import probe_payloads

    quiet, marker = probe_payloads()
    return [binascii.a2b_base64(q) for q in quiet], binascii.a2b_base64(marker)


class ProbeCallers(Callers):
    """Callers whose probe calls carry a marker once a second (sent times noted per call)."""

    def __init__(self) -> None:
        super().__init__(caller_audio())
        self.quiet, self.marker = probe_audio()
        self.markers: dict[SipCall, list[float]] = {}

    def frame_for(self, call: SipCall, tick: int) -> bytes:
        if call not in self.markers:
            return super().frame_for(call, tick)
        if tick % MARKER_EVERY:
            return self.quiet[tick % len(self.quiet)]
        self.markers[call].append(time.monotonic())
        return self.marker


class StandIn:
    """The API sipd asks, for the ``sip`` phase: every INVITE for ``to_user`` gets the stream of
    the room the script mapped to it."""

    def __init__(self, settings: Any, bridge_ws: str) -> None:
        self.settings, self.bridge_ws = settings, bridge_ws
        self.rooms: dict[str, str] = {}
        self.invites = 0
        self.runner: Any = None
        self.port = 0

    async def start(self) -> str:
        from aiohttp import web

        from adapters.telephony import tokens

        secret = self.settings.telephony.stream_secret.get_secret_value()
        expected = "Bearer " + self.settings.telephony.sip_secret.get_secret_value()

        async def invite(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != expected:
                return web.json_response({"code": "invalid_sip_secret"}, status=401)
            body = await request.json()
            self.invites += 1
            room = self.rooms.get(body.get("to_user", "").lstrip("+"))
            if room is None:
                return web.json_response({"action": "refuse", "status": 404,
                                          "reason": "unknown_number"})  # fmt: skip
            call_id = str(uuid.uuid5(uuid.NAMESPACE_URL, room))
            grant = tokens.StreamGrant(call_id=call_id, space_id="benchsip", agent_id="bench",
                                       agent_config_version=1, room_name=room,
                                       channel=CHANNEL)  # fmt: skip
            return web.json_response({
                "action": "connect", "call_id": call_id, "codec": "PCMU",
                "stream_url": f"{self.bridge_ws}/streams/sip",
                "token": tokens.issue(grant, secret, 600),
            })  # fmt: skip

        async def accepted(request: web.Request) -> web.Response:
            return web.json_response({"received": True})

        app = web.Application()
        app.router.add_post("/api/sip/invite", invite)
        app.router.add_post("/api/sip/status", accepted)
        app.router.add_post("/api/sip/transfer", accepted)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def sipd_stats(control_url: str, secret: str) -> dict[str, Any]:
    req = urllib.request.Request(control_url + "/stats",  # noqa: S310
                                 headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return dict(json.load(resp))


def sipd_reset(control_url: str, secret: str) -> None:
    req = urllib.request.Request(control_url + "/stats/reset", method="POST",  # noqa: S310
                                 headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    urllib.request.urlopen(req, timeout=10).close()  # noqa: S310


async def sip_phase(args: Any, settings: Any, logs: Path, steps: list[int]) -> list[dict]:
    from infra.stack import sipd as sipd_stack
    from tests.support.baresip import free_port
    from tests.support.sip_platform import Sipd, sipd_env

    results: list[dict] = []
    bridge = Bridge(settings, logs, max(steps) + 50, None, "bridge-sip")
    await bridge.start()
    bridge_ws = f"ws://127.0.0.1:{bridge.port}"
    standin = StandIn(settings, bridge_ws)
    api_url = await standin.start()
    telephony = settings.telephony.model_copy(update={
        "sip_port": free_port(), "sipd_control_port": free_port(), "sip_rtp_ports": "40000-44999",
    })  # fmt: skip
    bench_settings = settings.model_copy(update={"telephony": telephony})
    binary = await asyncio.to_thread(sipd_stack.build, bench_settings, log)
    sipd = Sipd(binary, sipd_env(bench_settings, api_url), logs)
    await asyncio.to_thread(sipd.start)
    secret = telephony.sip_secret.get_secret_value()
    target = ("127.0.0.1", telephony.sip_port)
    log(f"[sip] sipd pid {sipd.proc.pid if sipd.proc else '?'} on {target}, bridge pid "
        f"{bridge.pid}, stand-in API {api_url}")  # fmt: skip
    helper = Helper(logs, args.tone_frame_ms)
    rooms = Rooms(settings, f"benchsip-{uuid.uuid4().hex[:6]}")
    callers = ProbeCallers()
    callers.start_clock()
    assert sipd.proc is not None
    pids = {"sipd": sipd.proc.pid, "bridge": bridge.pid, "loadgen": os.getpid(),
            "helper": helper.proc.pid}  # fmt: skip
    for pid in procstat.pids_named("livekit-server")[:1]:
        pids["livekit"] = pid
    probe_rooms: dict[SipCall, str] = {}
    first_miss: int | None = None
    try:
        for n in steps:
            new = n - len(callers.calls)
            if new <= 0:
                continue
            names = await rooms.create(new)
            joined = await helper.ask({"join": names, "publish": True}, timeout=60 + 2 * new)
            log(f"[sip N={n}] helper in {joined['joined']} rooms ({joined['seconds']} s)")
            probes = names[: max(0, args.probes - len(probe_rooms))]
            if probes:
                await helper.ask({"probe": probes})
            placed: list[SipCall] = []

            async def one(i: int, name: str, probes: list[str], placed: list[SipCall]) -> None:
                await asyncio.sleep(i / args.ramp)
                number = f"1555{abs(hash(name)) % 10**7:07d}"
                standin.rooms[number] = name
                call = SipCall(target, "+" + number, "+15550000001")
                await call.open()
                if name in probes:
                    callers.markers[call] = []
                    probe_rooms[call] = name
                callers.calls.append(call)
                placed.append(call)
                await call.invite(timeout=30)

            began = time.monotonic()
            await asyncio.gather(*(one(i, name, probes, placed) for i, name in enumerate(names)))
            deadline = time.monotonic() + 30 + new / 2
            while time.monotonic() < deadline and any(
                c.received.first_sound_at is None for c in placed if c.final_status == 200
            ):  # fmt: skip
                await asyncio.sleep(0.2)
            refused = [c.final_status for c in placed if c.final_status != 200]
            log(f"[sip N={n}] {len(placed) - len(refused)} calls up in "
                f"{time.monotonic() - began:.1f} s (refused/failed: {refused[:5]}); "
                f"warm-up {args.warmup:g} s")  # fmt: skip
            await asyncio.sleep(args.warmup)
            step = await measure_sip(n, args, bridge, sipd.control_url, secret, callers,
                                     helper, probe_rooms, pids)  # fmt: skip
            results.append(step)
            log(f"[sip N={n}] {'PASS' if step['passed'] else 'MISS'}: setup p95 "
                f"{step['setup_p95_ms']} ms, first audio p95 {step['first_audio_p95_ms']} ms, "
                f"added p99 {step['added_latency_p99_ms']} ms (sipd {step['sipd_hop']['p99_ms']}"
                f" + bridge {step['bridge_hop']['p99_ms']}), e2e p50/p99 "
                f"{(step['end_to_end'] or {}).get('p50_ms')}/"
                f"{(step['end_to_end'] or {}).get('p99_ms')} ms, CPU sipd "
                f"{step['cpu']['sipd']:.0f}% bridge {step['cpu']['bridge']:.0f}% "
                f"({step['cpu_per_call_pct']}%/call)"
                f"{'; ' + '; '.join(step['missed']) if step['missed'] else ''}")  # fmt: skip
            if not step["passed"] and first_miss is None:
                first_miss = n
            elif first_miss is not None:
                break
    finally:
        log(f"[sip] hanging up {len(callers.calls)} calls")
        await callers.hang_up_all()
        await helper.stop()
        await rooms.delete_all()
        await asyncio.to_thread(sipd.stop)
        await bridge.stop()
        await standin.stop()
    return results


async def measure_sip(n: int, args: Any, bridge: Bridge, control: str, secret: str,
                      callers: ProbeCallers, helper: Helper, probe_rooms: dict[SipCall, str],
                      pids: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    await bridge.reset()
    await asyncio.to_thread(sipd_reset, control, secret)
    await helper.ask({"onsets": True})
    packets_before = {c: c.received.packets for c in callers.calls}
    gaps_from = {c: len(c.received.gaps) for c in callers.calls}
    t0 = time.monotonic()
    cpu = procstat.Window(pids)
    await asyncio.sleep(args.seconds)
    used, _ = cpu.since()
    window = time.monotonic() - cpu.started
    stats = await bridge.stats()
    hop = (await asyncio.to_thread(sipd_stats, control, secret))["inbound_latency"]
    t1 = time.monotonic()
    onsets = await helper.ask({"onsets": True})
    e2e = end_to_end([(callers.markers[c], room) for c, room in probe_rooms.items()],
                     onsets, t0, t1)  # fmt: skip
    up = [c for c in callers.calls if c.final_status == 200 and not c.ended_by_peer]
    expected = window / 0.02
    back = [c.received.packets - packets_before.get(c, 0) for c in up]
    gaps = [g for c in up for g in c.received.gaps[gaps_from.get(c, 0) :]]
    jitter = [abs(g - 0.02) for g in gaps]
    bridge_hop = stats["inbound_latency"]
    p99s = (hop.get("p99_ms"), bridge_hop.get("p99_ms"))
    added = round(p99s[0] + p99s[1], 2) if None not in p99s else None
    path_cpu = used["sipd"] + used["bridge"]
    missed = []
    if added is None or added > args.p99_ms:
        missed.append(f"added p99 {added} ms > {args.p99_ms:g}")
    if path_cpu > 100:
        missed.append(f"sipd + bridge CPU {path_cpu:.0f}% > 100% of a core")
    starved = sum(1 for b in back if b < expected / 2)
    if len(up) < n or starved:
        missed.append(f"{n - len(up)} calls down, {starved} hear too little")
    setups = [c.setup_s for c in callers.calls if c.setup_s is not None]
    firsts = [c.first_audio_s for c in callers.calls if c.first_audio_s is not None]
    return {
        "calls": n, "seconds": round(window, 1), "passed": not missed, "missed": missed,
        "setup_p50_ms": pct(setups, 50), "setup_p95_ms": pct(setups, 95),
        "first_audio_p50_ms": pct(firsts, 50), "first_audio_p95_ms": pct(firsts, 95),
        "sipd_hop": hop, "bridge_hop": bridge_hop, "added_latency_p99_ms": added,
        "end_to_end": e2e, "cpu": used,
        "cpu_per_call_pct": round(path_cpu / n, 2),
        "rtp_back_pct": round(100 * sum(back) / (expected * len(up)), 1) if up else None,
        "rtp_jitter_p50_ms": pct(jitter, 50), "rtp_jitter_p99_ms": pct(jitter, 99),
        "clock_late_p99_ms": pct(callers.lateness[-int(expected):], 99),
        "bridge_counters": stats["counters"],
    }  # fmt: skip


async def twilio_phase(args: Any, settings: Any, logs: Path, steps: list[int]) -> list[dict]:
    """``bench/bridge.py``'s tone mode on the same ladder (a fresh bridge)."""
    bridge_args = SimpleNamespace(
        media_delay=0.0, tone_frame_ms=args.tone_frame_ms, pin=False, probes=args.probes,
        ramp=args.ramp, warmup=args.warmup, seconds=args.seconds, fresh_probes=False,
        profile=None, p99_ms=args.p99_ms, spy_arg=[],
    )  # fmt: skip
    bridge = Bridge(settings, logs, max(steps) + 50, None, "bridge-twilio")
    out: list[Any] = []
    try:
        await bridge.start()
        await run_mode("tone", bridge_args, settings, bridge, logs, steps, out)
    finally:
        await bridge.stop()
    rows = []
    for step in out:
        row = step.row()
        e2e = row["client"]["end_to_end"] or {}
        rows.append({
            "calls": step.streams, "passed": step.passed, "missed": step.missed,
            "added_latency_p99_ms": row["inbound_p99_ms"], "bridge_hop_p50_ms":
            row["inbound_p50_ms"], "end_to_end": e2e, "cpu": step.cpu,
            "cpu_per_call_pct": round(step.cpu["bridge"] / step.streams, 2),
        })  # fmt: skip
        log(f"[twilio N={step.streams}] {'PASS' if step.passed else 'MISS'}: added p99 "
            f"{row['inbound_p99_ms']} ms, e2e p50/p99 {e2e.get('p50_ms')}/{e2e.get('p99_ms')} "
            f"ms, bridge CPU {step.cpu['bridge']:.0f}% "
            f"({rows[-1]['cpu_per_call_pct']}%/call)")  # fmt: skip
    return rows


def api(settings: Any, token: str, method: str, path: str, body: dict | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 - the local API
        f"http://{settings.api.host}:{settings.api.port}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return json.load(resp) if resp.status != 204 else None


async def platform_phase(args: Any, settings: Any) -> list[dict]:
    """Concurrent calls into the running platform through its sipd; setup and greeting."""
    from infra import devauth

    space = f"benchsip-{uuid.uuid4().hex[:6]}"
    key = devauth.ensure_dev_key(settings.auth.dev_signing_key)
    token = devauth.mint_token(key, issuer=settings.auth.issuer, audience=settings.auth.audience,
                               space_id=space, subject="bench-sip",
                               space_claim=settings.auth.space_claim)  # fmt: skip
    agent = api(settings, token, "POST", "/api/agents", {
        "name": "SIP bench", "system_prompt": "You answer the phone.",
        "first_message": "Hello! Thanks for calling. How can I help you today?",
    })  # fmt: skip
    trunk = api(settings, token, "POST", "/api/telephony/trunks", {
        "name": "bench", "inbound": {"allowed_addresses": ["127.0.0.1/32"]}})  # fmt: skip
    target = (settings.telephony.sip_host, settings.telephony.sip_port)
    rounds = []
    for n in [int(v) for v in args.platform.split(",")]:
        numbers = []
        for _ in range(n):
            e164 = f"+1646{uuid.uuid4().int % 8_000_000 + 2_000_000:07d}"
            made = api(settings, token, "POST", "/api/telephony/numbers",
                       {"e164": e164, "provider": "sip", "trunk_id": trunk["id"]})  # fmt: skip
            api(settings, token, "POST", f"/api/telephony/numbers/{made['id']}/assign",
                {"agent_id": agent["id"]})  # fmt: skip
            numbers.append(e164)
        callers = Callers(caller_audio())
        callers.start_clock()
        log(f"[platform N={n}] calling {n} numbers at {target[0]}:{target[1]}")
        calls = await asyncio.gather(*(callers.place(target, e, "+15550000002")
                                       for e in numbers))  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            c.received.first_sound_at is None for c in calls if c.final_status == 200
        ):  # fmt: skip
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        await callers.hang_up_all()
        setups = [c.setup_s for c in calls if c.setup_s is not None]
        firsts = [c.first_audio_s for c in calls if c.first_audio_s is not None]
        row = {"calls": n, "answered": len(setups), "heard_greeting": len(firsts),
               "statuses": sorted({str(c.final_status) for c in calls}),
               "setup_p50_ms": pct(setups, 50), "setup_p95_ms": pct(setups, 95),
               "first_audio_p50_ms": pct(firsts, 50),
               "first_audio_p95_ms": pct(firsts, 95)}  # fmt: skip
        rounds.append(row)
        log(f"[platform N={n}] answered {row['answered']}/{n}, greeting heard "
            f"{row['heard_greeting']}/{n}; setup p50/p95 {row['setup_p50_ms']}/"
            f"{row['setup_p95_ms']} ms; first audio p50/p95 {row['first_audio_p50_ms']}/"
            f"{row['first_audio_p95_ms']} ms")  # fmt: skip
        await asyncio.sleep(3)  # the agents see their callers leave
    return rounds


async def amain(args: Any) -> dict[str, Any]:
    from infra.settings import Settings

    settings = Settings()
    steps = [int(v) for v in args.calls.split(",")]
    phases = args.phases.split(",")
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "platform": host.platform(),
                                       "python": host.python_version()}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        log(f"SIP bench: phases {phases}, calls {steps}, {args.seconds:g} s windows; logs {logs}")
        if "sip" in phases:
            out["sip"] = await sip_phase(args, settings, logs, steps)
        if "twilio" in phases:
            out["twilio"] = await twilio_phase(args, settings, logs, steps)
        if "platform" in phases and args.platform:
            out["platform"] = await platform_phase(args, settings)
    sip = out.get("sip", [])
    passing = [s["calls"] for s in sip if s["passed"]]
    timing = out.get("platform") or sip
    out.update(
        setup_p95_ms=max((r["setup_p95_ms"] for r in timing if r["setup_p95_ms"]), default=None),
        first_audio_p95_ms=max((r["first_audio_p95_ms"] for r in timing
                                if r["first_audio_p95_ms"]), default=None),
        added_latency_p99_ms=next((s["added_latency_p99_ms"] for s in reversed(sip) if s["passed"]),
                                  sip[0]["added_latency_p99_ms"] if sip else None),
        calls_per_core=max(passing, default=0),
    )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="10,25,50,75", help="the ladder, e.g. 10,25,50")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before each window")
    parser.add_argument("--ramp", type=float, default=10.0, help="new calls per second")
    parser.add_argument("--probes", type=int, default=4, help="calls that carry markers")
    parser.add_argument("--p99-ms", type=float, default=10.0, help="added latency p99 limit")
    parser.add_argument("--tone-frame-ms", type=int, default=100)
    parser.add_argument("--phases", default="sip,twilio,platform")
    parser.add_argument("--platform", default="1,5",
                        help="concurrent calls per round into the running platform")  # fmt: skip
    parser.add_argument("--logs", type=Path, default=None, help="keep the logs here")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(amain(args)), separators=(",", ":")))


if __name__ == "__main__":
    main()
