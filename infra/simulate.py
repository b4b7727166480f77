"""``voxagent simulate calls``: realistic call signal streams onto ``<prefix>.ingress.worker.v1``.

Each simulated call follows the signal contract (docs/signals.md): initiated, started (after
ringing), then turns -- the agent greets, then user and agent alternate -- with final transcripts
at growing offsets, usage every turn (STT seconds, LLM input/output tokens, TTS characters,
telephony seconds on phone channels), turn metrics every agent turn, some tool calls (some
failing), some key presses (DTMF) by phone callers, some transfers (requested + completed), some
failures (ended early with reason ``error``), and varied lengths. A turn takes one second of
simulated time, so every speaker says one transcript per second (the benchmark's load).

``plan_call`` is pure and deterministic for ``(seed, index)``; ``simulate_calls`` schedules
``concurrency`` calls at a time on a simulated clock and produces them keyed by ``call_id``:
``speed=1.0`` paces them in real time, ``speed=0`` sends as fast as possible. With a ``seed`` and
a ``start``, two runs produce the same bytes.
"""

from __future__ import annotations

import heapq
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from commands.signals import iso_ms
from infra.settings import Settings

USER_LINES = (
    "Hi, I'd like to check on my order.",
    "It's order A-1001.",
    "Can you repeat that?",
    "When will it arrive?",
    "Can I change the delivery address?",
    "Yes, please.",
    "No, that's all, thanks.",
    "I was charged twice.",
    "Can I talk to a person?",
)
AGENT_LINES = (
    "Sure, let me look that up for you.",
    "Your order shipped yesterday.",
    "It should arrive on Thursday.",
    "I've updated the address.",
    "Is there anything else I can help with?",
    "I'm transferring you now.",
    "Could you give me the order number?",
    "Thanks for calling, goodbye!",
)
CHANNELS = (("web", 4), ("twilio_sip", 3), ("twilio_media_streams", 2), ("voximplant", 1))
TELEPHONY_MODEL = {
    "twilio_sip": ("twilio", "sip"),
    "twilio_media_streams": ("twilio", "media"),
    "voximplant": ("voximplant", "pstn"),
}
TOOLS = ("lookup_order", "update_address", "check_refund")
KEYS = ("1", "2", "3", "0", "*", "#", "1001#", "42#")  # a menu choice or a number and '#'


@dataclass(frozen=True)
class Step:
    """One signal of a call, ``offset`` seconds after the call's initiation (no ``at`` yet)."""

    offset: float
    data: dict[str, Any]


@dataclass
class Summary:
    calls: int = 0
    signals: int = 0
    failed: int = 0
    transfers: int = 0
    tool_calls: int = 0
    seconds: float = 0.0
    call_ids: list[uuid.UUID] = field(default_factory=list)

    def describe(self) -> str:
        rate = self.signals / self.seconds if self.seconds else 0.0
        return (
            f"simulated {self.calls} calls ({self.failed} failed, {self.transfers} "
            f"transferred, {self.tool_calls} tool calls): {self.signals} signals in "
            f"{self.seconds:.1f}s ({rate:.0f}/s)"
        )


def plan_call(
    index: int, *, seed: int, space_id: str, agent_id: uuid.UUID, agent_config_version: int = 1
) -> list[Step]:
    """The signals of simulated call ``index`` of run ``seed`` (deterministic)."""
    rng = random.Random(f"{seed}:{index}")  # noqa: S311 - a simulation, not crypto
    keypad = random.Random(f"{seed}:{index}:dtmf")  # noqa: S311 - apart: rng's stream unchanged
    call_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    names = [name for name, _ in CHANNELS]
    weights = [weight for _, weight in CHANNELS]
    channel: str = rng.choices(names, weights)[0]
    phone = channel != "web"
    steps: list[Step] = []
    base = {
        "space_id": space_id,
        "call_id": str(call_id),
        "source": "simulator",
        "schema_version": 1,
    }

    def add(offset: float, signal_type: str, /, **fields: Any) -> None:
        sid = f"sim-{call_id}-{len(steps)}"
        steps.append(
            Step(round(offset, 3), {"signal_id": sid, "type": signal_type, **base, **fields})
        )

    def usage(offset: float, provider: str, model: str, kind: str, quantity: float) -> None:
        add(offset, "call.usage", provider=provider, model=model, kind=kind, quantity=quantity)

    add(
        0.0,
        "call.initiated",
        agent_id=str(agent_id),
        agent_config_version=agent_config_version,
        direction="web" if not phone else rng.choice(("inbound", "inbound", "outbound")),
        channel=channel,
        room_name=f"sim-{call_id}",
        from_number=f"+1555{rng.randrange(10**7):07d}" if phone else None,
        to_number=f"+1555{rng.randrange(10**7):07d}" if phone else None,
    )
    fate = rng.random()
    if fate < 0.05:  # never answered: the provider reports a failure
        at = rng.uniform(2.0, 6.0)
        add(at, "call.ended", reason="error", duration_ms=int(at * 1000))
        return steps
    answered = rng.uniform(0.3, 2.0)
    add(answered, "call.started")
    turns = rng.randint(2, 14)
    if fate < 0.12:
        turns = rng.randint(1, turns)  # fails mid-call
    with_tools = rng.random() < 0.35
    t = answered
    for turn in range(turns):
        turn_id = f"turn-{turn}"
        ms = int((t - answered) * 1000)
        if phone and turn > 0 and keypad.random() < 0.15:
            for k, digit in enumerate(keypad.choice(KEYS)):
                add(t + 0.1 + 0.06 * k, "call.dtmf", digit=digit, offset_ms=ms + 100 + 60 * k)
        if turn > 0:
            text = rng.choice(USER_LINES)
            spoken = rng.randint(300, 450)
            add(
                t + 0.45,
                "call.transcript",
                turn_id=turn_id,
                speaker="user",
                text=text,
                start_ms=ms,
                end_ms=ms + spoken,
            )
            usage(t + 0.46, "deepgram", "nova-3", "stt_seconds", spoken / 1000)
        if with_tools and turn > 0 and rng.random() < 0.4:
            failed = rng.random() < 0.2
            add(
                t + 0.5,
                "call.tool_invoked",
                turn_id=turn_id,
                name=rng.choice(TOOLS),
                arguments={"order_id": f"A-{rng.randrange(1000, 9999)}"},
                result=None if failed else {"status": "ok"},
                error="upstream returned 503" if failed else None,
                status="error" if failed else "ok",
                latency_ms=rng.randint(40, 900),
            )
        reply = rng.choice(AGENT_LINES) if turn else "Hello! How can I help you today?"
        usage(t + 0.55, "openai", "gpt-4o-mini", "llm_input_tokens", 250 + 80 * turn)
        usage(t + 0.56, "openai", "gpt-4o-mini", "llm_output_tokens", rng.randint(8, 60))
        usage(t + 0.57, "cartesia", "sonic-2", "tts_characters", len(reply))
        add(
            t + 0.95,
            "call.transcript",
            turn_id=turn_id,
            speaker="agent",
            text=reply,
            start_ms=ms + 500,
            end_ms=ms + 950,
        )
        add(
            t + 0.96,
            "call.turn_metrics",
            turn_id=turn_id,
            end_of_speech_to_first_audio_ms=rng.randint(450, 1400),
            stt_final_ms=rng.randint(80, 300),
            llm_first_token_ms=rng.randint(150, 700),
            tts_first_byte_ms=rng.randint(60, 250),
        )
        if phone:
            usage(t + 0.97, *TELEPHONY_MODEL[channel], "telephony_seconds", 1.0)
        t += 1.0
    if fate < 0.12:
        reason = "error"
    elif fate < 0.24:
        reason = "transferred"
        target = f"+1555{rng.randrange(10**7):07d}" if phone else "queue:support"
        add(t + 0.2, "call.transfer_requested", mode=rng.choice(("warm", "cold")), target=target)
        t += rng.uniform(1.0, 3.0)
        add(t, "call.transfer_completed", succeeded=rng.random() < 0.9)
    else:
        reason = rng.choice(("hangup", "hangup", "agent_hangup"))
    end = t + rng.uniform(0.2, 1.0)
    add(end, "call.ended", reason=reason, duration_ms=int((end - answered) * 1000))
    return steps


def simulate_calls(
    settings: Settings,
    *,
    calls: int,
    concurrency: int,
    space_id: str,
    agent_id: uuid.UUID,
    agent_config_version: int = 1,
    seed: int | None = None,
    speed: float = 0.0,
    start: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    producer: Any = None,
) -> Summary:
    """Produce ``calls`` simulated calls, ``concurrency`` at a time; block until the broker
    acknowledged every signal. ``speed``: 1.0 = real time, 0 = as fast as possible."""
    from adapters.kafka.producer import build_producer

    seed = random.SystemRandom().getrandbits(63) if seed is None else seed
    start = start or datetime.now(UTC)
    topic = f"{settings.topic_prefix}.ingress.worker.v1"
    producer = producer or build_producer(settings)
    summary, errors = Summary(), []
    began = time.monotonic()
    last_report = began

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for due, data in _schedule(calls, concurrency, seed, space_id, agent_id, agent_config_version):
        if speed > 0:
            time.sleep(max(0.0, began + due / speed - time.monotonic()))
        data = {**data, "at": iso_ms(start + timedelta(seconds=due))}
        value = json.dumps(data, separators=(",", ":")).encode()
        while True:
            try:
                producer.produce(topic, value, data["call_id"].encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        _count(summary, data)
        if progress and time.monotonic() - last_report >= 2.0:
            last_report = time.monotonic()
            progress(f"simulate: {summary.calls}/{calls} calls done, {summary.signals} signals")
    left = producer.flush(60)
    summary.seconds = time.monotonic() - began
    if errors or left:
        raise RuntimeError(f"{len(errors)} signals failed, {left} unacknowledged: {errors[:3]}")
    return summary


def _count(summary: Summary, data: dict[str, Any]) -> None:
    summary.signals += 1
    kind = data["type"]
    if kind == "call.initiated":
        summary.call_ids.append(uuid.UUID(data["call_id"]))
    elif kind == "call.tool_invoked":
        summary.tool_calls += 1
    elif kind == "call.transfer_completed":
        summary.transfers += 1
    elif kind == "call.ended":
        summary.calls += 1
        summary.failed += data["reason"] == "error"


def _schedule(
    calls: int, concurrency: int, seed: int, space_id: str, agent_id: uuid.UUID, version: int
) -> Iterator[tuple[float, dict[str, Any]]]:
    """``(simulated second, signal data)`` in time order, ``concurrency`` calls in flight."""
    rng = random.Random(f"{seed}:schedule")  # noqa: S311
    heap: list[tuple[float, int, int, float, list[Step]]] = []  # due, seq, pos, begin, steps
    next_index = 0

    def launch(begin: float) -> None:
        nonlocal next_index
        if next_index >= calls:
            return
        steps = plan_call(
            next_index,
            seed=seed,
            space_id=space_id,
            agent_id=agent_id,
            agent_config_version=version,
        )
        heapq.heappush(heap, (begin + steps[0].offset, next_index, 0, begin, steps))
        next_index += 1

    for _ in range(min(concurrency, calls)):
        launch(rng.uniform(0.0, 1.0))
    while heap:
        due, seq, pos, begin, steps = heapq.heappop(heap)
        yield due, steps[pos].data
        if pos + 1 < len(steps):
            heapq.heappush(heap, (begin + steps[pos + 1].offset, seq, pos + 1, begin, steps))
        else:
            launch(due + rng.uniform(0.1, 1.0))
