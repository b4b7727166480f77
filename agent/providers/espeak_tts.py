"""``espeak``: text-to-speech on this machine with the espeak-ng program.

espeak-ng writes a WAV stream to stdout (a RIFF header with placeholder sizes, then 16-bit PCM
as it synthesizes). We parse the header and push the PCM on in small frames as it arrives, so
the first audio leaves before the sentence is finished. A cancelled synthesis (barge-in) kills
the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import struct
import uuid

from livekit.agents import APIError, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from domain.errors import ProviderUnavailable

log = logging.getLogger(__name__)

SAMPLE_RATE = 22_050  # espeak-ng's native rate
FRAME_MS = 20
READ_SIZE = 2048


def find_binary(binary: str) -> str | None:
    """The program's full path (``binary`` may be a name on PATH or a path), None if missing."""
    if os.sep in binary:
        return binary if os.path.isfile(binary) and os.access(binary, os.X_OK) else None
    return shutil.which(binary)


def missing_binary_message(binary: str) -> str:
    return (
        f"the espeak TTS needs the espeak-ng program, but {binary!r} was not found: "
        "run `apt-get install espeak-ng` (or `voxagent stack up`, which installs it), "
        "or point VOXAGENT_PROVIDERS__ESPEAK_BINARY at it"
    )


def default_voice(language: str) -> str:
    """espeak-ng voice for an agent language: ``en`` speaks American English."""
    lang = language.lower()
    return "en-us" if lang == "en" else lang


class EspeakTTS(tts.TTS):
    def __init__(
        self,
        *,
        binary: str = "espeak-ng",
        voice: str | None = None,
        language: str = "en",
        words_per_minute: int = 175,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
        )
        path = find_binary(binary)
        if path is None:
            raise ProviderUnavailable(missing_binary_message(binary))
        self._binary = path
        self._voice = voice or default_voice(language)
        self._rate = words_per_minute

    @property
    def model(self) -> str:
        return "espeak-ng"

    @property
    def provider(self) -> str:
        return "espeak"

    @property
    def voice(self) -> str:
        return self._voice

    def command(self) -> list[str]:
        return [self._binary, "--stdout", "-v", self._voice, "-s", str(self._rate)]

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakStream:
        return EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        request_id = uuid.uuid4().hex[:12]
        if not self._input_text.strip():  # nothing to say; the emitter must still start
            output_emitter.initialize(
                request_id=request_id,
                sample_rate=SAMPLE_RATE,
                num_channels=1,
                mime_type="audio/pcm",
            )
            return
        proc = await asyncio.create_subprocess_exec(
            *self._espeak.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin and proc.stdout and proc.stderr  # all three are pipes
        writer = asyncio.create_task(_feed(proc.stdin, self._input_text))
        try:
            header = WavHeaderReader()
            started = False
            while True:
                chunk = await proc.stdout.read(READ_SIZE)
                if not chunk:
                    break
                pcm = header.feed(chunk)
                if pcm is None:
                    continue
                if not started:
                    started = True
                    if header.sample_rate != SAMPLE_RATE:
                        log.debug("espeak-ng voice speaks at %d Hz", header.sample_rate)
                    output_emitter.initialize(
                        request_id=request_id,
                        sample_rate=header.sample_rate,
                        num_channels=header.channels,
                        mime_type="audio/pcm",
                        frame_size_ms=FRAME_MS,
                    )
                if pcm:
                    output_emitter.push(pcm)
            await writer
            code = await proc.wait()
            if code != 0:
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                raise APIError(f"espeak-ng exited with {code}: {err}", retryable=False)
            if not started:
                raise APIError("espeak-ng produced no WAV data", retryable=False)
            output_emitter.flush()
        finally:
            writer.cancel()
            if proc.returncode is None:  # cancelled (barge-in) or failed mid-stream
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


async def _feed(stdin: asyncio.StreamWriter, text: str) -> None:
    """Write the text and close stdin; concurrent with reading, so no pipe can fill up."""
    try:
        stdin.write(text.encode() + b"\n")
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stdin.close()


class WavHeaderReader:
    """Incremental RIFF/WAVE parser: ``feed`` returns None until the ``data`` chunk starts,
    then the PCM bytes of each chunk (its size fields are placeholders when streamed)."""

    def __init__(self) -> None:
        self._buf = b""
        self._in_data = False
        self.sample_rate = SAMPLE_RATE
        self.channels = 1

    def feed(self, chunk: bytes) -> bytes | None:
        if self._in_data:
            return chunk
        self._buf += chunk
        if len(self._buf) < 12:
            return None
        if self._buf[:4] != b"RIFF" or self._buf[8:12] != b"WAVE":
            raise APIError("espeak-ng did not write a WAV stream", retryable=False)
        pos = 12
        while len(self._buf) >= pos + 8:
            kind, size = (
                self._buf[pos : pos + 4],
                struct.unpack("<I", self._buf[pos + 4 : pos + 8])[0],
            )
            if kind == b"data":
                self._in_data = True
                rest, self._buf = self._buf[pos + 8 :], b""
                return rest
            if len(self._buf) < pos + 8 + size:
                return None
            if kind == b"fmt ":
                fmt, channels, rate, _, _, bits = struct.unpack(
                    "<HHIIHH", self._buf[pos + 8 : pos + 24]
                )
                if fmt != 1 or bits != 16:
                    raise APIError(
                        f"espeak-ng wrote WAV format {fmt}/{bits} bit, not PCM16", retryable=False
                    )
                self.sample_rate, self.channels = rate, channels
            pos += 8 + size + (size & 1)
        return None
