"""A realistic stream of calls built with the Call aggregate (no write side needed), shared by
the calls read-side tests and the ClickHouse SQL tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from domain.calls import Call
from domain.contract import iso_ms

SPACE, OTHER = "space-calls", "space-other"
AGENTS = ("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222")
START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # a Monday
KEYS = {0: "42#", 3: "1", 6: "0*"}  # the key presses (DTMF) of calls 0, 3 and 6


def build_calls(seed: int = 7) -> list[Call]:
    """Eight calls over ten days, two agents, one other space; transcripts out of order, tools
    failing now and then, key presses in three calls, a transfer, usage of every kind, one call
    still in progress."""
    rnd = random.Random(seed)
    calls = []
    for i in range(8):
        space = OTHER if i == 7 else SPACE
        begin = START + timedelta(days=i + i // 4, hours=i)
        clock = iter(iso_ms(begin + timedelta(seconds=s)) for s in range(10_000))
        call = Call.initiate(
            space_id=space, agent_id=AGENTS[i % 2], agent_config_version=1 + i % 3,
            direction=("inbound", "outbound", "web")[i % 3], channel="twilio_sip",
            room_name=f"room-{i}", at=next(clock), from_number=f"+1555000{i}", to_number="+1555",
        )  # fmt: skip
        call.start(at=next(clock))
        for n, digit in enumerate(KEYS.get(i, "")):
            call.receive_dtmf(digit=digit, offset_ms=300 + 150 * n, at=next(clock))
        turns = 2 + i % 3
        lines = []
        for turn in range(turns):
            for k, speaker in enumerate(("user", "agent")):
                start_ms = turn * 4000 + k * 2000
                lines.append((f"t{turn}", speaker, f"{speaker} says {turn}", start_ms))
        rnd.shuffle(lines)  # signals arrive out of order; offsets give the spoken order
        for turn_id, speaker, text, start_ms in lines:
            call.add_transcript(turn_id=turn_id, speaker=speaker, text=text, start_ms=start_ms,
                                end_ms=start_ms + 1500, at=next(clock))  # fmt: skip
        for turn in range(turns):
            status = "error" if (i + turn) % 4 == 0 else "ok"
            call.invoke_tool(name=("lookup", "book")[turn % 2], arguments={"turn": turn},
                             result={"ok": status == "ok"}, error=None if status == "ok" else "x",
                             status=status, latency_ms=100 + turn, at=next(clock),
                             turn_id=f"t{turn}")  # fmt: skip
            call.record_turn_metrics(turn_id=f"t{turn}", at=next(clock),
                                     end_of_speech_to_first_audio_ms=700 + 10 * i + turn,
                                     llm_first_token_ms=300, stt_final_ms=None)  # fmt: skip
            for provider, model, kind, quantity in (
                ("deepgram", "nova-2", "stt_seconds", 3.7 + turn),
                ("openai", "gpt-4o-mini", "llm_input_tokens", 850 + 17 * turn),
                ("openai", "gpt-4o-mini", "llm_output_tokens", 41 + turn),
                ("elevenlabs", "eleven_flash_v2_5", "tts_characters", 120 + turn),
                ("twilio", "sip", "telephony_seconds", 4.0),
            ):
                call.record_usage(provider=provider, model=model, kind=kind, quantity=quantity,
                                  at=next(clock))  # fmt: skip
        if i == 2:
            call.request_transfer(mode="warm", target="+15559999", at=next(clock))
            call.complete_transfer(succeeded=i % 2 == 0, at=next(clock))
        if i != 5:
            call.end(reason="hangup", duration_ms=60_000 + 1000 * i, at=next(clock))
        calls.append(call)
    return calls
