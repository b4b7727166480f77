"""The worker's signals obey the contract ingest enforces (commands.signals), and the
recorder turns session messages and usage totals into the right ones."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from agent.recorder import CallRecorder
from agent.signals import SignalEmitter
from commands.signals import parse_signal

pytestmark = pytest.mark.unit
CALL = "9b2e4c1a-6f55-4a9e-9a57-3f0d7c1e2b10"


class Captured:
    """Stands in for the Kafka client's produce(): records what the emitter hands over."""

    def __init__(self, fail: bool = False) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.fail = fail

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery=None) -> None:
        if self.fail:
            raise BufferError("queue full")
        self.messages.append((topic, value, key))


@dataclass
class LLMModelUsage:
    provider: str
    model: str
    input_tokens: int
    output_tokens: int


@dataclass
class TTSModelUsage:
    provider: str
    model: str
    characters_count: int


@dataclass
class STTModelUsage:
    provider: str
    model: str
    audio_duration: float


def emitter(producer: Captured) -> SignalEmitter:
    return SignalEmitter(producer, "vox.ingress.worker.v1", space_id="acme", call_id=CALL,
                         job_id="AJ_abcdefghijkl",
                         clock=lambda: datetime(2026, 11, 25, 12, tzinfo=UTC))  # fmt: skip


def sent(producer: Captured) -> list[dict]:
    return [json.loads(value) for _, value, _ in producer.messages]


def test_every_signal_parses_under_the_ingest_contract_and_is_keyed_by_call():
    producer = Captured()
    e = emitter(producer)
    e.started()
    e.transcript("turn-1", "user", "Where is my order?", 1400, 3000)
    e.tool_invoked("turn-1", "lookup_order", {"order_id": "A1"}, {"status": "shipped"},
                   None, "ok", 230)  # fmt: skip
    e.dtmf("5", 4100)
    e.usage("whisper-local", "tiny.en", "stt_seconds", 1.6)
    e.turn_metrics("turn-1", 780, 140, 320, 110)
    e.ended("hangup", 60_800)
    types = []
    for (topic, value, key), raw in zip(producer.messages, sent(producer), strict=True):
        assert topic == "vox.ingress.worker.v1" and key == CALL.encode()
        signal = parse_signal(value)
        types.append(signal.type)
        assert signal.source == "worker" and signal.space_id == "acme"
        assert raw["signal_id"].startswith(CALL)
    assert types == ["call.started", "call.transcript", "call.tool_invoked", "call.dtmf",
                     "call.usage", "call.turn_metrics", "call.ended"]  # fmt: skip
    assert len({m["signal_id"] for m in sent(producer)}) == 7


def test_a_key_press_is_sent_with_its_offset_and_a_contract_digit():
    producer = Captured()
    e = emitter(producer)
    e.dtmf("#", 12_345)
    e.dtmf("b", -3)  # a lower-case letter key, a clock that ran backwards
    assert [(s["digit"], s["offset_ms"]) for s in sent(producer)] == [("#", 12_345), ("B", 0)]
    assert all(parse_signal(value).type == "call.dtmf" for _, value, _ in producer.messages)


def test_a_full_buffer_never_fails_the_call():
    e = emitter(Captured(fail=True))
    e.started()  # logged, not raised
    assert e.emitted[0]["type"] == "call.started"


def test_the_recorder_numbers_turns_and_reports_latencies_of_agent_turns():
    producer = Captured()
    clock = iter([100.0 + i for i in range(100)])
    rec = CallRecorder(emitter(producer), started_at=100.0, clock=lambda: next(clock))
    rec.message("assistant", "Hello! How can I help?", {})  # the greeting: turn-0, no latency
    rec.message("user", "Where is my order?",
                {"started_speaking_at": 101.4, "stopped_speaking_at": 103.0,
                 "transcription_delay": 0.14, "end_of_turn_delay": 0.6})  # fmt: skip
    rec.message("assistant", "It shipped.",
                {"started_speaking_at": 103.8, "e2e_latency": 0.78, "llm_node_ttft": 0.32,
                 "tts_node_ttfb": 0.11})  # fmt: skip
    rec.message("user", "   ", {})  # nothing said: no turn
    signals = sent(producer)
    transcripts = [s for s in signals if s["type"] == "call.transcript"]
    assert [(t["turn_id"], t["speaker"]) for t in transcripts] == [
        ("turn-0", "agent"), ("turn-1", "user"), ("turn-1", "agent")]  # fmt: skip
    assert (transcripts[1]["start_ms"], transcripts[1]["end_ms"]) == (1400, 3000)
    (metrics,) = [s for s in signals if s["type"] == "call.turn_metrics"]
    assert metrics == {**metrics, "turn_id": "turn-1", "end_of_speech_to_first_audio_ms": 780,
                       "stt_final_ms": 140, "llm_first_token_ms": 320,
                       "tts_first_byte_ms": 110, "end_of_turn_ms": 600}  # fmt: skip
    assert rec.latencies[0].end_of_turn == 0.6


def test_usage_is_reported_as_growth_of_the_running_totals():
    producer = Captured()
    rec = CallRecorder(emitter(producer), started_at=0.0, clock=lambda: 1.0)
    rec.usage([LLMModelUsage("scripted", "rules", 10, 4), TTSModelUsage("espeak", "en-us", 30),
               STTModelUsage("whisper-local", "tiny.en", 1.5)])  # fmt: skip
    rec.usage([LLMModelUsage("scripted", "rules", 25, 4), TTSModelUsage("espeak", "en-us", 30),
               STTModelUsage("whisper-local", "tiny.en", 2.0)])  # fmt: skip
    usage = [(s["kind"], s["quantity"]) for s in sent(producer) if s["type"] == "call.usage"]
    assert usage == [
        ("llm_input_tokens", 10), ("llm_output_tokens", 4), ("tts_characters", 30),
        ("stt_seconds", 1.5), ("llm_input_tokens", 15), ("stt_seconds", 0.5),
    ]  # fmt: skip
