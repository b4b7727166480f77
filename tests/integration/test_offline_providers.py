"""The offline providers for real: espeak-ng speaks, Whisper hears it, and the OpenAI plugin
talks to a local server that speaks OpenAI's streaming wire format. No stack needed; espeak-ng
must be installed (`voxagent stack up` installs it)."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from livekit import rtc
from livekit.agents import llm, stt

from agent.providers import ProviderRegistry
from agent.providers.espeak_tts import SAMPLE_RATE, EspeakTTS, WavHeaderReader
from agent.providers.whisper_stt import WhisperSTT
from domain.agent_config import AgentConfig, LlmConfig
from infra.settings import ProviderSettings

pytestmark = pytest.mark.integration

SENTENCE = "I would like to check the status of my order."  # Whisper tiny hears it reliably
SESSION_RATE = 24_000  # RoomIO's default input rate: what the STT gets in a call


def espeak(**options: Any) -> EspeakTTS:
    return EspeakTTS(binary=ProviderSettings().espeak_binary, **options)


async def synthesize(voice: EspeakTTS, text: str) -> tuple[list[rtc.AudioFrame], float]:
    """The frames, and the seconds until the first one arrived."""
    started = time.perf_counter()
    first: float | None = None
    frames: list[rtc.AudioFrame] = []
    async with voice.synthesize(text) as stream:
        async for audio in stream:
            first = first if first is not None else time.perf_counter() - started
            frames.append(audio.frame)
    assert first is not None
    return frames, first


def to_session_rate(frames: list[rtc.AudioFrame], frame_ms: int = 20) -> list[rtc.AudioFrame]:
    """The speech as a call would deliver it: resampled to 24 kHz, in 20 ms frames."""
    whole = rtc.combine_audio_frames(frames)
    resampler = rtc.AudioResampler(whole.sample_rate, SESSION_RATE, num_channels=1)
    pcm = b"".join(bytes(f.data) for f in resampler.push(whole) + resampler.flush())
    size = SESSION_RATE * frame_ms // 1000 * 2
    return [
        rtc.AudioFrame(pcm[i : i + size], SESSION_RATE, 1, len(pcm[i : i + size]) // 2)
        for i in range(0, len(pcm) - size + 1, size)
    ]


def fake_espeak(tmp_path: Path, *, pause: float, pid_file: Path | None = None) -> str:
    """A stand-in espeak-ng: a WAV header and 100 ms of tone, then a pause, then more tone."""
    script = tmp_path / "slow-espeak"
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import math, os, struct, sys, time
            pid_file = {str(pid_file or "")!r}
            if pid_file:
                open(pid_file, "w").write(str(os.getpid()))
            rate = 22050
            tone = b"".join(
                struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(rate // 10)
            )
            out = sys.stdout.buffer
            out.write(b"RIFF" + struct.pack("<I", 0x7FFFF000) + b"WAVEfmt ")
            out.write(struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16))
            out.write(b"data" + struct.pack("<I", 0x7FFFF000) + tone)
            out.flush()
            time.sleep({pause})
            out.write(tone)
            """
        )
    )
    script.chmod(0o755)
    return str(script)


def test_espeak_speaks_a_sentence_as_streamed_pcm():
    frames, first_audio = asyncio.run(synthesize(espeak(), SENTENCE))
    audio = rtc.combine_audio_frames(frames)
    assert audio.sample_rate == SAMPLE_RATE == 22_050
    assert audio.num_channels == 1
    assert 1.0 < audio.duration < 4.0
    samples = np.frombuffer(audio.data, dtype=np.int16).astype(np.float64)
    assert np.sqrt(np.mean(samples**2)) > 300  # speech, not silence
    assert len(frames) > 10  # small frames, not one blob
    print(
        f"\nespeak: {audio.duration:.2f} s of audio, first audio after {first_audio * 1000:.0f} ms"
    )


def test_espeak_audio_leaves_before_the_program_is_done(tmp_path):
    voice = EspeakTTS(binary=fake_espeak(tmp_path, pause=1.5))
    frames, first_audio = asyncio.run(synthesize(voice, "anything"))
    assert first_audio < 1.2  # the first 100 ms went out during the pause
    assert sum(f.duration for f in frames) == pytest.approx(0.2, abs=0.01)


def test_a_cancelled_synthesis_kills_espeak(tmp_path):
    pid_file = tmp_path / "pid"
    voice = EspeakTTS(binary=fake_espeak(tmp_path, pause=30, pid_file=pid_file))

    async def barge_in() -> None:
        stream = voice.synthesize("a long answer the caller interrupts")
        await stream.__anext__()  # speaking...
        await stream.aclose()  # ...interrupted

    asyncio.run(barge_in())
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_nothing_to_say_is_no_audio_and_no_error():
    frames: list[rtc.AudioFrame] = []

    async def say_nothing() -> None:
        async with espeak().synthesize("  ") as stream:
            frames.extend([audio.frame async for audio in stream])

    asyncio.run(say_nothing())
    assert frames == []


def test_the_wav_header_may_arrive_in_pieces_and_carry_other_chunks():
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 16000, 32000, 2, 16)
    extra = b"LIST" + struct.pack("<I", 3) + b"abc\0"  # odd size: padded
    stream = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + fmt + extra + b"data\xff\xff\xff\xff"
    reader = WavHeaderReader()
    outputs = [reader.feed(stream[i : i + 1]) for i in range(len(stream))]
    assert outputs[:-1] == [None] * (len(stream) - 1) and outputs[-1] == b""
    assert (reader.sample_rate, reader.channels) == (16000, 1)
    assert reader.feed(b"\x01\x02") == b"\x01\x02"


def test_whisper_hears_what_espeak_said():
    frames, _ = asyncio.run(synthesize(espeak(), SENTENCE))
    call_audio = to_session_rate(frames)
    whisper = WhisperSTT(language="en-US")
    metrics: list[Any] = []
    whisper.on("metrics_collected", metrics.append)

    started = time.perf_counter()
    whisper.prewarm()  # no loop running: loads right here
    load = time.perf_counter() - started
    event = asyncio.run(whisper.recognize(call_audio))

    assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    text = event.alternatives[0].text.lower()
    assert "status" in text and "order" in text, text
    assert event.alternatives[0].language == "en"
    assert whisper.last_inference_seconds is not None and whisper.last_inference_seconds > 0
    [m] = metrics  # the framework times non-streaming recognize() itself
    assert m.streamed is False
    assert m.duration >= whisper.last_inference_seconds
    assert m.audio_duration == pytest.approx(sum(f.duration for f in call_audio), abs=0.01)
    print(
        f"\nwhisper: load {load:.2f} s, inference {whisper.last_inference_seconds:.2f} s "
        f"on {m.audio_duration:.2f} s of audio (recognize {m.duration:.2f} s): {text!r}"
    )


def test_whisper_hears_nothing_in_silence():
    silence = rtc.AudioFrame(bytes(SESSION_RATE * 2), SESSION_RATE, 1, SESSION_RATE)
    event = asyncio.run(WhisperSTT().recognize(silence))
    assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    assert event.alternatives[0].text == ""


class FakeOpenAI:
    """A local server answering /v1/chat/completions the way OpenAI streams (SSE)."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.requests: list[dict[str, Any]] = []

    async def completions(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(data: object) -> None:
            await response.write(f"data: {json.dumps(data)}\n\n".encode())

        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0}
        base["model"] = "local-model"
        for i, word in enumerate(self.words):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            await send({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        usage = {"prompt_tokens": 12, "completion_tokens": len(self.words), "total_tokens": 15}
        await send({**base, "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def test_the_openai_plugin_streams_from_an_openai_compatible_server():
    fake = FakeOpenAI(["Your order ", "has ", "shipped."])
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.completions)

    async def converse() -> llm.CollectedResponse:
        async for base_url in serve(app):
            config = AgentConfig(
                name="Shop",
                llm=LlmConfig(provider="openai-compatible", base_url=base_url, model="local-model"),
            )
            registry = ProviderRegistry(ProviderSettings())
            registry.check(config)
            model = registry.llm(config)
            ctx = llm.ChatContext()
            ctx.add_message(role="system", content="You are the Acme order desk.")
            ctx.add_message(role="user", content="Where is my order?")
            pieces: list[str] = []
            async with model.chat(chat_ctx=ctx) as stream:
                async for chunk in stream:
                    if chunk.delta and chunk.delta.content:
                        pieces.append(chunk.delta.content)
            await model.aclose()
            return llm.CollectedResponse(text="|".join(pieces))
        raise AssertionError("the server did not start")

    response = asyncio.run(converse())
    assert response.text == "Your order |has |shipped."  # streamed, piece by piece
    [request] = fake.requests
    assert request["model"] == "local-model"
    assert request["stream"] is True
    messages = [(m["role"], m["content"]) for m in request["messages"]]
    assert ("system", "You are the Acme order desk.") in messages
    assert messages[-1] == ("user", "Where is my order?")
