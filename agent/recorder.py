"""Turns what an AgentSession reports into the call's signals: final transcripts of both
speakers (with their offsets in the call), usage per provider and model (as deltas of the
session's running totals), and per-turn latencies. No LiveKit objects are needed to test it:
it reads plain attributes of chat messages and usage records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.signals import SignalEmitter

_MS = 1000.0


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(int(round(seconds * _MS)), 0)


@dataclass
class TurnLatency:
    """One agent turn's latencies (seconds), as the bench and turn_metrics report them."""

    turn_id: str
    end_of_speech_to_first_audio: float | None
    stt_final: float | None
    end_of_turn: float | None
    llm_first_token: float | None
    tts_first_byte: float | None


@dataclass
class CallRecorder:
    emitter: SignalEmitter
    started_at: float  # epoch seconds of the call's start (offsets are from here)
    clock: Callable[[], float]
    turn: int = 0
    transcript: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[TurnLatency] = field(default_factory=list)
    _usage_seen: dict[tuple[str, str, str], float] = field(default_factory=dict)
    _last_user_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def turn_id(self) -> str:
        return f"turn-{self.turn}"

    def message(self, role: str, text: str, metrics: dict[str, Any] | None,
                created_at: float | None = None, interrupted: bool = False,
                turn_id: str | None = None) -> None:  # fmt: skip
        """A final message of the conversation (``conversation_item_added``); an agent's reply
        the caller cut off is ``interrupted`` and holds what they heard. ``turn_id``: the turn
        it belongs to, when it is recorded after a later message."""
        if role not in ("user", "assistant") or not text.strip():
            return
        metrics = metrics or {}
        if role == "user":
            self.turn += 1
            self._last_user_metrics = metrics
        speaker = "user" if role == "user" else "agent"
        now = created_at or self.clock()
        start = metrics.get("started_speaking_at") or now
        end = metrics.get("stopped_speaking_at") or max(start, now)
        start_ms = int((start - self.started_at) * _MS)
        end_ms = int((end - self.started_at) * _MS)
        turn_id = turn_id or self.turn_id
        self.emitter.transcript(turn_id, speaker, text.strip(), start_ms, end_ms, interrupted)
        line = {"turn_id": turn_id, "speaker": speaker, "text": text.strip()}
        self.transcript.append({**line, "interrupted": True} if interrupted else line)
        if role == "assistant" and metrics.get("e2e_latency") is not None:
            self._turn_metrics(metrics)

    def _turn_metrics(self, metrics: dict[str, Any]) -> None:
        user = self._last_user_metrics
        latency = TurnLatency(
            turn_id=self.turn_id,
            end_of_speech_to_first_audio=metrics.get("e2e_latency"),
            stt_final=user.get("transcription_delay"),
            end_of_turn=user.get("end_of_turn_delay"),
            llm_first_token=metrics.get("llm_node_ttft"),
            tts_first_byte=metrics.get("tts_node_ttfb"),
        )
        self.latencies.append(latency)
        self.emitter.turn_metrics(
            self.turn_id,
            end_of_speech_to_first_audio_ms=_ms(latency.end_of_speech_to_first_audio),
            stt_final_ms=_ms(latency.stt_final),
            llm_first_token_ms=_ms(latency.llm_first_token),
            tts_first_byte_ms=_ms(latency.tts_first_byte),
            end_of_turn_ms=_ms(latency.end_of_turn),
        )

    def usage(self, model_usage: list[Any]) -> None:
        """The session's running totals per model; emits what grew since the last call."""
        for u in model_usage:
            kind_of = type(u).__name__
            if kind_of.startswith("LLM"):
                self._delta(u, "llm_input_tokens", u.input_tokens)
                self._delta(u, "llm_output_tokens", u.output_tokens)
            elif kind_of.startswith("TTS"):
                self._delta(u, "tts_characters", u.characters_count)
            elif kind_of.startswith("STT"):
                self._delta(u, "stt_seconds", round(u.audio_duration, 3))

    def _delta(self, u: Any, kind: str, total: float) -> None:
        provider, model = str(u.provider or "unknown"), str(u.model or "unknown")
        key = (provider, model, kind)
        grown = total - self._usage_seen.get(key, 0)
        if grown > 0:
            self._usage_seen[key] = total
            self.emitter.usage(provider, model, kind, grown)

    def duration_ms(self) -> int:
        return int((self.clock() - self.started_at) * _MS)
