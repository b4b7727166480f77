"""Voice benchmark: turn latency of scripted web calls, and how many calls one worker holds.

One ``voxagent worker`` process with the offline providers (Silero VAD, Whisper tiny.en,
the scripted LLM, espeak-ng) on the local LiveKit server. Each conversation is a web call
started the way ``POST /api/livekit/token`` starts one (``CallsApplication.initiate_call``,
``LiveKitRooms.open`` with the agent dispatched, a caller token); an rtc caller
(``tests.support.caller``) joins, waits for the greeting, then speaks K pre-synthesized
utterances (espeak-ng, 16 kHz, silence trimmed), each once the agent's previous reply is over.

Per turn, two measurements:

* the worker's own, from its ``call.turn_metrics`` signals (read back from
  ``<prefix>.ingress.worker.v1``): ``end_of_speech_to_first_audio_ms`` (e2e: the user's end of
  speech as Silero places it -> the first reply frame handed to the room), ``end_of_turn_ms``
  (end of speech -> the turn decision: VAD silence window, Whisper, endpointing),
  ``stt_final_ms``, ``llm_first_token_ms``, ``tts_first_byte_ms``. Platform share = e2e -
  end_of_turn - llm_first_token - tts_first_byte: the time after the turn decision not spent
  waiting for the LLM's first token or the TTS's first audio;
* the caller's: its last utterance sample leaving the SDK's queue -> the first voiced frame of
  the reply received (adds both WebRTC legs and the espeak reply's leading silence).

A concurrency ladder (C = 1, 2, 4, ... simultaneous conversations, starts staggered) finds the
largest C whose p95 e2e turn latency stays within ``--growth`` (20%) of C=1's, with no turn
unanswered. Per step it also reports CPU per process (and the worker's per thread name) from
/proc. ``--profile DIR`` samples the worker with py-spy during each step (a separate run:
sampling costs CPU).

Runs against the local stack (``voxagent stack up``) in databases and topics of its own, with a
worker of its own registered under an agent name of its own (other workers get none of its
calls). Ends with one line of JSON (DESIGN §8).

    .venv/bin/python bench/voice.py
    .venv/bin/python bench/voice.py --max-concurrency 2 --turns 2
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procstat  # noqa: E402
from bench.stats import percentile
from tests.support.caller import FRAME, RATE, Caller, _rms, speak  # noqa: E402

SPACE = "benchvoice"
VOICED_RMS = 500  # what tests.support.caller calls voiced
MIC_MS = 20  # the callers' frames both ways (10 ms frames cost the driver twice the CPU)
SILENCE_WINDOW_MS = 550  # Silero's min_silence_duration: part of every end_of_turn
GREETING = "Hello! How can I help you?"
FALLBACK = "Sorry, could you say that again?"
SCRIPT = [  # (what the caller says, the rule's pattern, the agent's reply)
    ("What are your opening hours?", r"open|hours", "We are open from nine to five."),
    ("Where is your office?", r"where|office", "Our office is on Main Street."),
    ("Can I change my booking?", r"change|book", "Yes, you can change it online."),
    ("How much is delivery?", r"deliver|much|cost", "Delivery is free over fifty dollars."),
    ("Do you have parking?", r"park", "Yes, there is parking behind the building."),
    ("Is the shop open on Sunday?", r"sunday|shop", "No, we are closed on Sundays."),
]
METRICS = {  # column -> call.turn_metrics field (or a derived figure)
    "e2e": "end_of_speech_to_first_audio_ms",
    "end_of_turn": "end_of_turn_ms",
    "stt_final": "stt_final_ms",
    "llm_ttft": "llm_first_token_ms",
    "tts_ttfb": "tts_first_byte_ms",
}
BREAKDOWN = {
    "e2e": "end of speech -> first reply frame (worker's clock)",
    "end_of_turn": "end of speech -> turn decision",
    "stt_final": "  of which: end of speech -> final transcript",
    "stt_beyond_window": "  final transcript - the 550 ms VAD silence window",
    "commit": "  final transcript -> turn decision",
    "llm_ttft": "LLM first token (scripted)",
    "tts_ttfb": "TTS first byte (espeak-ng)",
    "platform": "e2e - end_of_turn - llm_ttft - tts_ttfb",
    "caller": "caller: last sample sent -> first voiced frame heard",
    "transport": "caller - e2e (same turn)",
    "driver_lag": "the driver's event loop: lateness of a 10 ms sleep",
}


def whole(value: float) -> int | None:
    return None if value != value else round(value)  # NaN: nothing measured


def agent_config():
    from domain.agent_config import AgentConfig

    rules = [{"match": m, "reply": r} for _, m, r in reversed(SCRIPT)]  # "Sunday" before "open"
    return AgentConfig.model_validate({
        "name": "Voice bench", "system_prompt": "You answer questions about the shop.",
        "first_message": GREETING, "silence_timeout_seconds": 60,
        "llm": {"provider": "scripted", "script": rules, "fallback_reply": FALLBACK},
    })  # fmt: skip


def trimmed(pcm: np.ndarray, margin_ms: int = 20) -> np.ndarray:
    """``pcm`` without its leading and trailing silence (10 ms frames below the voiced RMS),
    so that its last sample is the end of speech."""
    frames = [_rms(pcm[i : i + FRAME]) > VOICED_RMS for i in range(0, len(pcm), FRAME)]
    voiced = [i for i, v in enumerate(frames) if v]
    margin = margin_ms * RATE // 1000
    start = max(voiced[0] * FRAME - margin, 0)
    end = min((voiced[-1] + 1) * FRAME + margin, len(pcm))
    return pcm[start:end]


def whisper_reference(utterances: list[np.ndarray], workers: int) -> list[float]:
    """Milliseconds Whisper takes per utterance in the worker's configuration (its model, one
    CPU thread), here in the driver before the worker starts: the inference alone, as a
    reference. Each utterance gets the silence around it that Silero hands the STT (0.5 s of
    prefix padding, the 0.55 s silence window)."""
    from faster_whisper import WhisperModel

    from agent.providers.whisper_stt import default_model_path

    model = WhisperModel(str(default_model_path()), device="cpu", compute_type="int8",
                         cpu_threads=1, num_workers=workers)  # fmt: skip
    out = []
    for pcm in utterances * 3:
        padded = np.concatenate([np.zeros(RATE // 2), pcm, np.zeros(SILENCE_WINDOW_MS * 16)])
        started = time.perf_counter()
        segments, _ = model.transcribe(
            (padded / 32768.0).astype(np.float32), language="en", beam_size=1,
            without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
        )  # fmt: skip
        list(segments)
        out.append((time.perf_counter() - started) * 1000)
    return out[len(utterances) :]  # the first round warms up


# -- the caller ------------------------------------------------------------------------------


class BenchCaller(Caller):
    """``tests.support.caller.Caller`` with one task writing the microphone (silence, or an
    utterance when there is one: ``Caller.say`` next to its silence loop can have two captures
    in flight, which overfills the SDK's queue -- "InvalidState - failed to capture frame"),
    20 ms frames, and only the arrival times of voiced frames kept (judged once, on arrival)."""

    def __init__(self) -> None:
        super().__init__()
        self.voiced: list[float] = []
        self._utterances: asyncio.Queue[tuple[np.ndarray, asyncio.Future[float]]] = asyncio.Queue()

    async def _read(self, track) -> None:
        from livekit import rtc

        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1, frame_size_ms=MIC_MS)
        async for event in stream:
            data = np.frombuffer(event.frame.data, dtype=np.int16)
            if _rms(data) > VOICED_RMS:
                self.voiced.append(time.monotonic())

    async def _silence_forever(self) -> None:
        from livekit import rtc

        size = MIC_MS * RATE // 1000
        zero = np.zeros(size, dtype=np.int16)
        while not self.disconnected.is_set():
            try:
                pcm, done = self._utterances.get_nowait()
            except asyncio.QueueEmpty:
                pcm, done = zero, None
            try:
                for start in range(0, len(pcm), size):
                    chunk = pcm[start : start + size]
                    if len(chunk) < size:
                        chunk = np.pad(chunk, (0, size - len(chunk)))
                    frame = rtc.AudioFrame(chunk.tobytes(), RATE, 1, size)
                    await self.source.capture_frame(frame)
            except Exception as exc:  # noqa: BLE001 - the utterance's caller gets it
                if done is None:
                    raise
                done.set_exception(exc)
                continue
            if done is not None:  # its last sample leaves the SDK's queue after what is queued
                done.set_result(time.monotonic() + self.source.queued_duration)

    async def utter(self, pcm: np.ndarray) -> float:
        """Say ``pcm``; returns when its last sample leaves the SDK's queue (monotonic)."""
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        await self._utterances.put((pcm, done))
        return await done

    def first_voice_after(self, since: float) -> float | None:
        i = bisect.bisect_left(self.voiced, since)
        return self.voiced[i] if i < len(self.voiced) else None

    async def reply_after(self, since: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while (heard := self.first_voice_after(since)) is None:
            if time.monotonic() > deadline or self.disconnected.is_set():
                return None
            await asyncio.sleep(0.02)
        return heard

    async def wait_quiet(self, seconds: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.voiced and time.monotonic() - self.voiced[-1] >= seconds:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the agent did not go quiet for {seconds}s within {timeout}s")

    async def leave(self) -> None:
        await super().leave()
        self.disconnected.set()  # ends the microphone's silence loop
        await self.source.aclose()


@dataclass
class Conversation:
    call_id: str
    room_name: str
    said: list[int] = field(default_factory=list)  # SCRIPT index per turn
    caller_ms: list[float | None] = field(default_factory=list)  # None: no reply heard
    error: str | None = None


async def converse(env, slot: int, delay: float, turns: int, log) -> Conversation:
    """One web call: start it as the API does, greet, K turns, hang up."""
    from adapters.livekit.rooms import CallRoom
    from commands.agents import Actor
    from commands.call_commands import InitiateCall

    await asyncio.sleep(delay)
    actor = Actor(space_id=SPACE, subject="bench")
    cmd = InitiateCall(agent_id=env.agent_id, direction="web", channel="web")
    call = (await asyncio.to_thread(env.container.calls.initiate_call, actor, cmd)).call
    room = CallRoom(call_id=str(call.id), space_id=SPACE, agent_id=str(env.agent_id),
                    agent_config_version=call.agent_config_version,
                    room_name=call.room_name)  # fmt: skip
    conv = Conversation(str(call.id), call.room_name)
    env.rooms_opened.append(call.room_name)
    caller = BenchCaller()
    try:
        async with asyncio.timeout(120 + turns * (env.reply_timeout + 60)):  # a stack gone away
            await talk(env, slot, conv, room, caller, turns)
    except Exception as exc:  # noqa: BLE001 - counted and reported
        conv.error = f"{type(exc).__name__}: {exc}"
        log(f"    slot {slot}: call {conv.call_id} failed: {conv.error}")
        if env.verbose:
            traceback.print_exc()
    finally:
        await caller.leave()
    return conv


async def talk(env, slot: int, conv: Conversation, room, caller: BenchCaller, turns: int) -> None:
    rng = random.Random(conv.call_id)
    await env.rooms.open(room)
    token = env.rooms.join_token(room.room_name, f"caller-{slot}-{uuid.uuid4().hex[:6]}",
                                 "Bench caller", timedelta(minutes=30))  # fmt: skip
    await caller.join(env.settings.livekit.url, token)
    if await caller.reply_after(0.0, timeout=90) is None:
        raise TimeoutError("no greeting within 90 s")
    await caller.wait_quiet(0.8, timeout=60)
    for k in range(turns):
        which = (slot + k) % len(SCRIPT)
        sent = await caller.utter(env.utterances[which])
        heard = await caller.reply_after(sent, timeout=env.reply_timeout)
        conv.said.append(which)
        conv.caller_ms.append(None if heard is None else (heard - sent) * 1000)
        if heard is not None:
            await caller.wait_quiet(0.8, timeout=60)
        await asyncio.sleep(rng.uniform(0.2, 0.8))  # the caller thinks


# -- what the worker said about the calls ----------------------------------------------------


class Signals(threading.Thread):
    """Reads the run's worker signals: turn metrics, agent transcripts and ends, by call."""

    def __init__(self, settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.lock = threading.Lock()
        self.turns: dict[str, list[dict]] = defaultdict(list)
        self.agent_said: dict[str, list[str]] = defaultdict(list)
        self.ended: dict[str, str] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer({
            "bootstrap.servers": self.settings.kafka.bootstrap,
            "group.id": f"benchvoice-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })  # fmt: skip
        consumer.subscribe([f"{self.settings.topic_prefix}.ingress.worker.v1"])
        try:
            while not self.stopping.is_set():
                for msg in consumer.consume(500, timeout=0.5):
                    if msg.error():
                        continue
                    s = json.loads(msg.value())
                    with self.lock:
                        if s["type"] == "call.turn_metrics":
                            self.turns[s["call_id"]].append(s)
                        elif s["type"] == "call.transcript" and s["speaker"] == "agent":
                            self.agent_said[s["call_id"]].append(s["text"])
                        elif s["type"] == "call.ended":
                            self.ended[s["call_id"]] = s["reason"]
        finally:
            consumer.close()

    def wait_ended(self, call_ids: list[str], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                left = [c for c in call_ids if c not in self.ended]
            if not left:
                return []
            time.sleep(0.2)
        return left


# -- CPU -------------------------------------------------------------------------------------


ESPEAK = "espeak-ng (worker children)"
SERVICES = {"postgres": "postgres", "java": "kafka", "livekit-server": "livekit"}


def cpu_ticks(pids: dict[str, int]) -> dict[object, tuple[str, int]]:
    """CPU ticks used so far, labelled: our processes by pid, the services by name, the
    worker's waited-for children (espeak-ng), and the whole machine's busy and stolen ticks."""
    by_pid = {pid: name for name, pid in pids.items()}
    ticks: dict[object, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (found := procstat.stat(f"/proc/{entry}/stat")) is None:
            continue
        comm, fields = found
        pid = int(entry)
        name = by_pid.get(pid) or SERVICES.get(comm) or (
            "clickhouse" if comm.startswith("clickhouse") else "other")  # fmt: skip
        ticks[pid] = (name, int(fields[11]) + int(fields[12]))
        if name == "worker":
            ticks["children"] = (ESPEAK, int(fields[13]) + int(fields[14]))
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    ticks["machine"] = ("machine", sum(cpu[:3]) + cpu[5] + cpu[6])
    ticks["steal"] = ("steal", cpu[7])
    return ticks


def cpu_percent(before: dict, after: dict, seconds: float) -> dict[str, int]:
    """% of one core per label between two ``cpu_ticks``; processes that ended in between
    (other than the worker's espeak-ng) count under ``ended``."""
    used: Counter[str] = Counter()
    for key, (name, n) in after.items():
        old = before.get(key)
        used[name] += n - (old[1] if old and old[0] == name else 0)
    listed = sum(n for k, n in used.items() if k not in ("machine", "steal"))
    used["ended"] = max(0, used["machine"] - listed)
    per_percent = os.sysconf("SC_CLK_TCK") * seconds / 100
    return {k: round(n / per_percent) for k, n in used.most_common()}


WORKER_WARNINGS = {  # what the worker's log says when a call's thread falls behind
    "vad_slower_than_realtime": "VAD inference is slower than realtime",
    "event_loop_blocked": "event loop blocked for",
}
SPY_RATE = 100  # py-spy samples per second
RTC_THREADS = {  # the LiveKit SDK's Rust runtime and libwebrtc's threads (names cut at 15)
    "tokio-rt-worker", "network_thread", "worker_thread", "signaling_threa", "AudioSourceCapt",
    "SyntheticAudioD", "AudioEncoderQue", "AudioDecoderQue",
}  # fmt: skip


class WorkerThreads(threading.Thread):
    """CPU of the worker's threads, sampled every ``interval`` (so that per-call threads are
    counted before they end, less their last interval). ``split()`` tells the threads named
    "python" apart with ``py-spy dump``: Python threads, or native ones that inherited the
    name (ctranslate2's Whisper workers)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.lock = threading.Lock()
        self.last: dict[str, int] = {}
        self.used: Counter[tuple[str, str]] = Counter()  # (tid, comm) -> ticks since reset
        self.started = time.monotonic()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            tasks = {}
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{self.pid}/task"):
                    if (found := procstat.stat(f"/proc/{self.pid}/task/{tid}/stat")) is not None:
                        tasks[tid] = (found[0], int(found[1][11]) + int(found[1][12]))
            with self.lock:
                for tid, (comm, n) in tasks.items():
                    self.used[(tid, comm)] += n - self.last.get(tid, 0)
                    self.last[tid] = n
                for tid in set(self.last) - set(tasks):
                    del self.last[tid]

    def reset(self) -> None:
        with self.lock:
            self.used.clear()
            self.started = time.monotonic()

    def split(self) -> dict[str, int]:
        """% of one core since ``reset`` by kind of thread."""
        python: set[str] = set()
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        with contextlib.suppress(Exception):
            dump = subprocess.run([spy, "dump", "--json", "--pid", str(self.pid)],
                                  capture_output=True, text=True, timeout=30).stdout  # fmt: skip
            python = {str(t["os_thread_id"]) for t in json.loads(dump)}
        with self.lock:
            seconds, used, alive = time.monotonic() - self.started, dict(self.used), set(self.last)
        out: Counter[str] = Counter()
        for (tid, comm), n in used.items():
            if comm == "python" and python and tid in alive and tid not in python:
                out["native, named python (ctranslate2)"] += n
            elif comm == "python":
                out["python threads" if tid in alive else "python threads (ended)"] += n
            elif comm in RTC_THREADS or comm.startswith("tokio"):
                out[f"rtc: {comm.strip()}"] += n
            else:
                out[comm.strip()] += n
        per_percent = os.sysconf("SC_CLK_TCK") * seconds / 100
        return {k: round(n / per_percent) for k, n in out.most_common()}


def profile(pid: int, seconds: float, path: Path, extra: list[str]) -> subprocess.Popen:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [spy, "record", *([] if "--native" in extra else ["--nonblocking"]),  # needs pauses
         "-r", str(SPY_RATE), "-d", str(int(seconds)), "-f", "raw", "-o", str(path), "--pid",
         str(pid), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


CATEGORIES = [  # (what, file path prefixes as py-spy prints them); the frame nearest the leaf
    ("whisper (faster-whisper, ours)", ("faster_whisper/", "agent/providers/whisper_stt")),
    ("VAD (Silero, onnxruntime)", ("silero/", "onnxruntime/")),
    ("speaking-rate STFT (agents)", ("agents/voice/transcription/_speaking_rate",)),
    ("espeak TTS (ours)", ("agent/providers/espeak_tts",)),
    ("LiveKit rtc SDK (FFI)", ("rtc/",)),
    ("signals, recorder (ours)", ("agent/signals", "agent/recorder", "confluent_kafka/")),
    ("our other code", ("agent/", "adapters/", "domain/", "infra/", "commands/")),
    ("agents: turn detection, STT adapter", ("agents/voice/audio_recognition", "agents/stt/",
                                             "agents/vad")),
    ("agents: room I/O", ("agents/voice/room_io/",)),
    ("agents: reply generation, TTS, LLM", ("agents/voice/", "agents/tts/", "agents/llm/",
                                            "agents/tokenize/")),
    ("agents: other (ipc, telemetry, utils)", ("agents/",)),
    ("asyncio event loops", ("asyncio/", "selectors.py")),
    ("threads, executors", ("threading.py", "concurrent/")),
]  # fmt: skip


def hot_spots(path: Path, top: int = 10) -> tuple[int, list[str], list[str]]:
    """Samples of a raw py-spy file, their split by CATEGORIES, and the functions with the
    most samples of their own."""
    kinds: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = []
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            frames.append((name, where.rsplit(":", 1)[0]))
        kind = next((what for _, where in reversed(frames) for what, prefixes in CATEGORIES
                     if where.startswith(prefixes)), "other")  # fmt: skip
        kinds[kind] += n
        name, where = frames[-1]
        own[f"{name} ({where.split('/')[-1]})"] += n

    def show(counter: Counter[str], limit: int) -> list[str]:
        return [f"{100 * n / total:5.1f}%  {f}" for f, n in counter.most_common(limit)]

    return total, show(kinds, len(CATEGORIES) + 1), show(own, top)


# -- a step of the ladder --------------------------------------------------------------------


@dataclass
class Step:
    concurrency: int
    seconds: float
    conversations: list[Conversation]
    figures: dict[str, list[float]]
    missed: int
    misheard: int
    cpu: dict[str, int]
    threads: dict[str, int]
    unended: list[str]
    warnings: dict[str, int]


def figures_of(conversations: list[Conversation], signals: Signals) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    with signals.lock:
        for conv in conversations:
            turns = sorted(signals.turns.get(conv.call_id, []),
                           key=lambda s: int(s["turn_id"].split("-")[1]))  # fmt: skip
            for s in turns:
                v = {k: s.get(f) for k, f in METRICS.items()}
                for k, x in v.items():
                    if x is not None:
                        out[k].append(float(x))
                if v["end_of_turn"] is not None and v["stt_final"] is not None:
                    out["commit"].append(v["end_of_turn"] - v["stt_final"])
                if v["stt_final"] is not None:
                    out["stt_beyond_window"].append(v["stt_final"] - SILENCE_WINDOW_MS)
                if all(x is not None for x in v.values()):
                    out["platform"].append(v["e2e"] - v["end_of_turn"] - v["llm_ttft"]
                                           - v["tts_ttfb"])  # fmt: skip
            heard = [ms for ms in conv.caller_ms if ms is not None]
            out["caller"].extend(heard)
            # one worker turn per caller turn, in order, when every turn was heard and counted
            if len(heard) == len(conv.caller_ms) == len(turns):
                for ms, s in zip(heard, turns, strict=True):
                    if s.get(METRICS["e2e"]) is not None:
                        out["transport"].append(ms - s[METRICS["e2e"]])
    return out


async def run_step(env, c: int, args, log) -> Step:
    rounds = max(1, -(-args.min_turns // (c * args.turns)))  # conversations per slot
    period = args.stagger / c  # between slot starts

    async def slot(i: int) -> list[Conversation]:
        done = []
        for r in range(rounds):
            conv = await converse(env, i, i * period if r == 0 else 0.0, args.turns, log)
            done.append(conv)
            heard = [f"{ms:.0f}" if ms is not None else "-" for ms in conv.caller_ms]
            log(f"    C={c} slot {i} call {len(done)}/{rounds}: caller ms {' '.join(heard)}")
        return done

    async def spy() -> None:  # once every conversation of the step is under way
        await asyncio.sleep(args.stagger + 5)
        proc = profile(env.pids["worker"], args.profile_seconds,
                       args.profile / f"worker-c{c}.txt", args.spy_arg)  # fmt: skip
        await asyncio.to_thread(proc.wait)

    spying = asyncio.ensure_future(spy()) if args.profile else None
    lags: list[float] = []

    async def lag() -> None:  # the driver's own delay in seeing what its callers hear
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append((time.monotonic() - before - 0.01) * 1000)

    lagging = asyncio.ensure_future(lag())
    log_from = env.worker_log.stat().st_size
    env.threads.reset()
    cpu0, t0 = cpu_ticks(env.pids), time.monotonic()
    results = await asyncio.gather(*(slot(i) for i in range(c)))
    t1, cpu1 = time.monotonic(), cpu_ticks(env.pids)
    lagging.cancel()
    threads = await asyncio.to_thread(env.threads.split)
    with env.worker_log.open("rb") as f:
        f.seek(log_from)
        logged = f.read().decode(errors="replace")
    warnings = {what: logged.count(text) for what, text in WORKER_WARNINGS.items()}
    if spying is not None:
        await spying
    conversations = [conv for r in results for conv in r]
    unended = await asyncio.to_thread(
        env.signals.wait_ended, [cv.call_id for cv in conversations], 30.0
    )
    with env.signals.lock:
        said = [t for cv in conversations for t in env.signals.agent_said.get(cv.call_id, [])]
    return Step(
        concurrency=c, seconds=t1 - t0, conversations=conversations,
        figures=defaultdict(list, {**figures_of(conversations, env.signals), "driver_lag": lags}),
        missed=sum(ms is None for cv in conversations for ms in cv.caller_ms)
        + sum(cv.error is not None for cv in conversations),
        misheard=sum(t == FALLBACK for t in said), cpu=cpu_percent(cpu0, cpu1, t1 - t0),
        threads=threads, warnings=warnings,
        unended=unended,
    )  # fmt: skip


# -- the run ---------------------------------------------------------------------------------


def delete_topics(settings) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)]
    for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
        with contextlib.suppress(Exception):
            future.result()


@contextlib.contextmanager
def databases(name: str):
    """``isolated()``, plus the run's topics deleted (also when the run fails); failing to drop
    the databases afterwards costs a warning, not the figures."""
    from infra.settings import Settings
    from tests.support.databases import isolated

    manager = isolated(Settings(), name)
    settings = manager.__enter__()
    try:
        try:
            yield settings
        finally:
            with contextlib.suppress(Exception):
                delete_topics(settings)
    except BaseException:
        if not manager.__exit__(*sys.exc_info()):
            raise
    else:
        try:
            manager.__exit__(None, None, None)
        except Exception as exc:  # noqa: BLE001 - reported; the figures are kept
            print(f"warning: could not drop {name} ({exc}); drop it by hand", flush=True)


async def close_rooms(rooms, names: list[str]) -> int:
    from livekit import api

    async with rooms._client() as lk:
        present = {r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms}
        left = [n for n in names if n in present]
        for n in left:
            with contextlib.suppress(Exception):
                await lk.room.delete_room(api.DeleteRoomRequest(room=n))
    return len(left)


def ladder(limit: int) -> list[int]:
    return [c for c in (1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32) if c <= limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-concurrency", type=int, default=12, help="last step of the ladder")
    parser.add_argument("--steps", type=str, default=None,
                        help="explicit steps instead of the ladder, e.g. 1,8 (the first is the "
                        "baseline)")  # fmt: skip
    parser.add_argument("--turns", type=int, default=6, help="caller turns per conversation")
    parser.add_argument("--min-turns", type=int, default=30,
                        help="turns per step at least (slots run conversations one after "
                        "another until they are reached)")  # fmt: skip
    parser.add_argument("--stagger", type=float, default=6.0,
                        help="seconds over which a step's conversations start")  # fmt: skip
    parser.add_argument("--growth", type=float, default=0.2,
                        help="allowed growth of the p95 turn latency over C=1")  # fmt: skip
    parser.add_argument("--reply-timeout", type=float, default=15.0)
    parser.add_argument("--whisper-workers", type=int, default=None,
                        help="VOXAGENT_PROVIDERS__WHISPER_WORKERS of the worker")  # fmt: skip
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra variable for the worker (repeatable)")  # fmt: skip
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the worker during each step into this directory",
    )
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--spy-arg", action="append", default=[],
                        help="an extra py-spy record option, e.g. --gil or --native "
                        "(repeatable; write --spy-arg=--gil)")  # fmt: skip
    parser.add_argument("--logs", type=Path, default=None,
                        help="keep the worker's log in this directory")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failed calls")
    args = parser.parse_args()

    from adapters.kafka.topics import ensure_topics, ingress_topics
    from adapters.livekit.rooms import LiveKitRooms
    from commands.agents import Actor, CreateAgent
    from infra.bootstrap import bootstrap
    from tests.support.processes import Process, eventually

    def log(line: str) -> None:
        print(line, flush=True)

    others = subprocess.run(["pgrep", "-af", "infra.cli worker"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    if others:
        log(f"note: other workers are running (they share the CPU, not the calls):\n{others}")
    steps = [int(s) for s in args.steps.split(",")] if args.steps else ladder(
        args.max_concurrency)  # fmt: skip
    utterances = [trimmed(speak(text)) for text, _, _ in SCRIPT]
    name = f"voxagent_benchvoice_{uuid.uuid4().hex[:8]}"
    agent_name = f"voxagent-bench-{uuid.uuid4().hex[:8]}"
    worker_env = {
        "VOXAGENT_WORKER__MAX_CALLS": str(max(40, 2 * max(steps))),
        "VOXAGENT_LIVEKIT__AGENT_NAME": agent_name,
        **({"VOXAGENT_PROVIDERS__WHISPER_WORKERS": str(args.whisper_workers)}
           if args.whisper_workers else {}),
        **dict(kv.split("=", 1) for kv in args.worker_env),
    }  # fmt: skip
    log(f"voice bench: steps {steps}, {args.turns} turns per conversation, >= {args.min_turns} "
        f"turns per step; databases {name}; agent name {agent_name}")  # fmt: skip
    log("utterances (s): " + ", ".join(f"{len(u) / RATE:.2f}" for u in utterances))
    workers = int(worker_env.get("VOXAGENT_PROVIDERS__WHISPER_WORKERS", 0)) or None
    ref = whisper_reference(utterances, workers or 2)
    log(f"whisper tiny.en alone (1 thread, idle): p50 {percentile(ref, 50):.0f} ms, "
        f"max {max(ref):.0f} ms per utterance")  # fmt: skip

    result_steps: list[Step] = []
    with databases(name) as settings, tempfile.TemporaryDirectory() as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        settings = settings.model_copy(
            update={"livekit": settings.livekit.model_copy(update={"agent_name": agent_name})}
        )
        ensure_topics(settings, ingress_topics(settings))
        container = bootstrap(settings)
        container.calls  # its tables, before the worker builds its applications  # noqa: B018
        worker = Process("worker", settings, logs, env=worker_env)
        worker.log.unlink(missing_ok=True)  # "registered worker" must be this worker's
        signals = Signals(settings)
        signals.start()
        env = argparse.Namespace(
            settings=settings, container=container, rooms=LiveKitRooms(settings.livekit),
            utterances=utterances, reply_timeout=args.reply_timeout, signals=signals,
            rooms_opened=[], verbose=args.verbose,
        )  # fmt: skip
        try:
            worker.start()
            eventually(lambda: "registered worker" in worker.tail(400), timeout=120,
                       what="the worker registered with LiveKit", processes=(worker,))  # fmt: skip
            env.pids = {"worker": worker.proc.pid, "driver": os.getpid()}
            env.worker_log = worker.log
            env.threads = WorkerThreads(worker.proc.pid)
            env.threads.start()
            log(f"worker pid {worker.proc.pid} registered; driver pid {os.getpid()}")
            env.agent_id = container.agents.create_agent(
                Actor(space_id=SPACE, subject="bench"), CreateAgent(config=agent_config())
            ).id

            async def climb() -> None:
                baseline = None
                failures = 0
                for c in steps:
                    log(f"step C={c}...")
                    step = await run_step(env, c, args, log)
                    result_steps.append(step)
                    e2e = step.figures["e2e"]
                    p95 = percentile(e2e, 95)
                    baseline = baseline or p95
                    ok = p95 <= (1 + args.growth) * baseline and not step.missed
                    log(f"  C={c}: {len(e2e)} turns in {step.seconds:.0f}s, e2e p50 "
                        f"{percentile(e2e, 50):.0f} p95 {p95:.0f} ms ({p95 / baseline:.2f}x), "
                        f"platform p95 {percentile(step.figures['platform'], 95):.0f} ms, "
                        f"caller p95 {percentile(step.figures['caller'], 95):.0f} ms, missed "
                        f"{step.missed}, worker cpu {step.cpu.get('worker', 0)}%, machine "
                        f"{step.cpu.get('machine', 0)}% -> {'ok' if ok else 'OVER'}")  # fmt: skip
                    failures = 0 if ok else failures + 1
                    if failures >= 2 or p95 > 2 * baseline or step.missed > len(e2e) // 4:
                        log("  clearly past the limit; stopping")
                        break

            asyncio.run(climb())
        finally:
            worker.stop()
            signals.stopping.set()
            signals.join(5)
            with contextlib.suppress(Exception):
                left = asyncio.run(close_rooms(env.rooms, env.rooms_opened))
                if left:
                    log(f"closed {left} rooms the worker had left open")
            container.close()
            if any("Traceback" in line for line in worker.tail(2000).splitlines()):
                log("worker log had tracebacks:\n" + worker.tail(60))

    report(args, result_steps, ref, worker_env)


def report(args, steps: list[Step], ref: list[float], worker_env: dict[str, str]) -> None:
    base = steps[0]
    baseline = percentile(base.figures["e2e"], 95)
    holding = 0
    for s in steps:
        if percentile(s.figures["e2e"], 95) > (1 + args.growth) * baseline or s.missed:
            break
        holding = s.concurrency
    print("\nper step (ms; e2e and platform from the worker's turn metrics, caller from the "
          "rtc callers)")  # fmt: skip
    head = (f"{'C':>3} {'turns':>5} {'e2e p50':>8} {'p95':>6} {'x C1':>5} {'eot p95':>8} "
            f"{'plat p50':>8} {'p95':>5} {'caller p50':>10} {'p95':>6} {'missed':>6} "
            f"{'misheard':>8} {'worker%':>7} {'lk%':>4} {'driver%':>7} {'mach%':>5}")  # fmt: skip
    print(head)
    for s in steps:
        f, cpu = s.figures, s.cpu
        p = {k: (percentile(f[k], 50), percentile(f[k], 95)) for k in ("e2e", "platform",
                                                                        "caller")}  # fmt: skip
        print(f"{s.concurrency:>3} {len(f['e2e']):>5} {p['e2e'][0]:>8.0f} {p['e2e'][1]:>6.0f} "
              f"{p['e2e'][1] / baseline:>5.2f} {percentile(f['end_of_turn'], 95):>8.0f} "
              f"{p['platform'][0]:>8.0f} {p['platform'][1]:>5.0f} {p['caller'][0]:>10.0f} "
              f"{p['caller'][1]:>6.0f} {s.missed:>6} {s.misheard:>8} "
              f"{cpu.get('worker', 0) + cpu.get(ESPEAK, 0):>7} "
              f"{cpu.get('livekit', 0):>4} {cpu.get('driver', 0):>7} "
              f"{cpu.get('machine', 0):>5}")  # fmt: skip
    # C=1, the last step that held, the first that did not, and the last one
    held = [s for s in steps if s.concurrency <= holding]
    after = [s for s in steps if s.concurrency > holding]
    shown = list({id(s): s for s in [base, *held[-1:], *after[:1], steps[-1]]}.values())
    print(f"\nbreakdown, ms (p50 / p95){'':<40}" + "".join(
        f"{'C=' + str(s.concurrency):>16}" for s in shown))  # fmt: skip
    for key, label in BREAKDOWN.items():
        cells = "".join(
            f"{percentile(s.figures[key], 50):>8.0f} / {percentile(s.figures[key], 95):<5.0f}"
            for s in shown
        )
        print(f"{key:<18}{label:<48}{cells}")
    overhead = [percentile(s.figures["stt_beyond_window"], 50) - percentile(ref, 50)
                for s in shown]  # fmt: skip
    print(f"whisper alone (reference, driver, 1 thread): p50 {percentile(ref, 50):.0f} ms; STT "
          "path beyond the inference (stt_beyond_window p50 - that), estimate: "
          + ", ".join(f"C={s.concurrency} {o:.0f} ms" for s, o in zip(shown, overhead,
                                                                        strict=True)))  # fmt: skip
    for s in steps:
        top = ", ".join(f"{k} {v}" for k, v in s.cpu.items() if v >= 1)
        print(f"cpu C={s.concurrency}, % of one core: {top}")
        print("  worker threads: " + ", ".join(f"{k} {v}" for k, v in s.threads.items() if v))
        print("  worker log: " + ", ".join(f"{k} {v}" for k, v in s.warnings.items()))
        if s.unended:
            print(f"  calls without call.ended after 30 s: {len(s.unended)}")
    if args.profile:
        for s in steps:
            path = args.profile / f"worker-c{s.concurrency}.txt"
            if path.exists() and path.stat().st_size:
                total, incl, own = hot_spots(path)
                share = total / (SPY_RATE * args.profile_seconds)
                print(f"\npy-spy {' '.join(args.spy_arg)} worker C={s.concurrency} ({total} "
                      f"samples, {share:.2f} per tick), by the frame nearest the leaf:\n  "
                      + "\n  ".join(incl) + "\n self:\n  " + "\n  ".join(own))  # fmt: skip
    f1 = base.figures
    result = {
        "bench": "voice",
        "turn_p50_ms": whole(percentile(f1["e2e"], 50)),
        "turn_p95_ms": whole(baseline),
        "platform_p95_ms": whole(percentile(f1["platform"], 95)),
        "max_concurrent_calls": holding,
        "caller_turn_p50_ms": whole(percentile(f1["caller"], 50)),
        "caller_turn_p95_ms": whole(percentile(f1["caller"], 95)),
        "breakdown_c1_ms": {
            k: [whole(percentile(f1[k], 50)), whole(percentile(f1[k], 95))] for k in BREAKDOWN
        },  # fmt: skip
        "whisper_alone_p50_ms": whole(percentile(ref, 50)),
        "steps": {
            s.concurrency: {
                "turns": len(s.figures["e2e"]),
                "e2e_p50_ms": whole(percentile(s.figures["e2e"], 50)),
                "e2e_p95_ms": whole(percentile(s.figures["e2e"], 95)),
                "platform_p95_ms": whole(percentile(s.figures["platform"], 95)),
                "caller_p95_ms": whole(percentile(s.figures["caller"], 95)),
                "missed": s.missed,
                "driver_cpu_pct": s.cpu.get("driver", 0),
                **s.warnings,
                "worker_cpu_pct": s.cpu.get("worker", 0),
                "machine_cpu_pct": s.cpu.get("machine", 0),
            }
            for s in steps
        },
        "turns_per_conversation": args.turns,
        "growth_allowed": args.growth,
        "worker_env": {k: v for k, v in worker_env.items() if "AGENT_NAME" not in k},
        "targets_met": percentile(f1["platform"], 95) <= 50 and holding >= 10,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
