"""A VoxImplant scenario's WebSocket media, as VoxEngine sends and plays it.

The call's audio (``call.sendMediaTo(ws, {encoding, tag, customParameters})``): a ``start``
(sequenceNumber 0; the encoding named as in ``WebSocketAudioEncoding``: PCM8, PCM16, ULAW,
ALAW), then one ``media`` per 20 ms with numeric counters (``chunk`` +1 per packet,
``timestamp`` in samples, as RTP), then ``stop`` with ``mediaInfo``. There is no DTMF on the
socket, so ``dtmf`` is refused.

What the bridge sends is its own stream (``ws.sendMediaTo(call)``): its ``start`` names the
format, then ``media``, then ``stop``. VoxEngine buffers it and plays it in real time, keeping at
most 10 s: chunks beyond that are dropped (``discarded_chunks``). There are no marks. A
``{"customEvent": "clear"}`` text is what our scenario answers with ``clearMediaBuffer()``: the
buffer empties. Anything else the bridge sends is recorded in ``errors``.
Reference: https://voximplant.com/docs/guides/media-streams/format
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bridge import codecs
from bridge.resampling import Resampler
from tests.support.phone_stream import PhoneStream, b64

# WebSocketAudioEncoding value -> (our encoding, sample rate)
WIRE_ENCODINGS = {
    "PCM8": ("pcm16", 8000),
    "PCM16": ("pcm16", 16000),
    "ULAW": ("mulaw", 8000),
    "ALAW": ("alaw", 8000),
}


class VoxImplantEmulator(PhoneStream):
    buffer_limit_seconds = 10.0

    def __init__(
        self,
        url: str,
        parameters: dict[str, str] | None = None,
        *,
        encoding: str = "PCM16",
        sample_rate: int | None = None,
        tag: str | None = None,
        playback_tag: str | None = None,
        parameters_as_json: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``encoding``: what the scenario passes to ``sendMediaTo`` (PCM16 may be sent with
        ``sample_rate=8000``, as VoxImplant's own examples show); ``tag`` labels the call's
        stream; ``playback_tag`` is the one the scenario's ``ws.sendMediaTo(call)`` plays;
        ``parameters_as_json`` sends ``customParameters`` serialised as a string."""
        self.wire_encoding = encoding
        self.encoding, default_rate = WIRE_ENCODINGS[encoding]
        self.rate = sample_rate or default_rate
        super().__init__(url, headers=headers)
        self.parameters = dict(parameters or {})
        self.tag, self.playback_tag = tag, playback_tag
        self.parameters_as_json = parameters_as_json
        self.bytes_sent = 0
        # the bridge's stream
        self.outbound_starts = 0
        self.outbound_stops = 0
        self.outbound_format: tuple[str, int] | None = None  # (our encoding, rate)
        self.custom_events: list[dict[str, Any]] = []
        self._next_chunk = 0
        self._next_timestamp = 0
        self._resampler: Resampler | None = None

    def _opening(self) -> list[Any]:
        return [self._start_message]

    def _start_message(self, seq: int) -> dict[str, Any]:
        start: dict[str, Any] = {
            "mediaFormat": {"encoding": self.wire_encoding, "sampleRate": self.rate}
        }
        if self.parameters or self.parameters_as_json:
            start["customParameters"] = (
                json.dumps(self.parameters) if self.parameters_as_json else self.parameters
            )
        if self.tag is not None:
            start["tag"] = self.tag
        return {"event": "start", "sequenceNumber": seq, "start": start}

    def _media_message(self, seq: int, payload: bytes, chunk: int, due: float) -> dict[str, Any]:
        self.bytes_sent += len(payload)
        media: dict[str, Any] = {
            "chunk": chunk,
            "timestamp": round((due - self._stream_start) * self.rate),
            "payload": b64(payload),
        }
        if self.tag is not None:
            media["tag"] = self.tag
        return {"event": "media", "sequenceNumber": seq, "media": media}

    def _stop_message(self, seq: int) -> dict[str, Any]:
        samples = self.bytes_sent // codecs.bytes_per_sample(self.encoding)
        stop: dict[str, Any] = {
            "mediaInfo": {"bytesSent": self.bytes_sent, "duration": samples * 1000 // self.rate}
        }
        if self.tag is not None:
            stop["tag"] = self.tag
        return {"event": "stop", "sequenceNumber": seq, "stop": stop}

    async def dtmf(self, digit: str) -> None:
        """A key, as our scenario forwards VoxImplant's ``CallEvents.ToneReceived`` (the media
        stream itself carries no DTMF)."""
        await self.send_raw(json.dumps({"customEvent": "dtmf", "digit": digit}))

    # -- the bridge's stream --------------------------------------------------------------
    async def _handle(self, message: dict[str, Any]) -> None:
        if "customEvent" in message:
            if "event" in message:
                self.errors.append("a message with both event and customEvent")
                return
            self.custom_events.append(message)
            if message["customEvent"] == "clear":  # our scenario: webSocket.clearMediaBuffer()
                await self._clear()
            return
        event = message.get("event")
        body = message.get(event) if type(event) is str else None
        if event not in ("start", "media", "stop") or type(body) is not dict:
            self.errors.append(f"not a media stream message: {str(message)[:80]}")
            return
        if type(message.get("sequenceNumber")) is not int:
            self.errors.append(f"{event} without a numeric sequenceNumber")
        if body.get("tag") != self.playback_tag:
            self.errors.append(f"{event} tagged {body.get('tag')!r}: not bound to the call")
            return
        if event == "start":
            self._outbound_start(body)
        elif event == "stop":
            self.outbound_stops += 1
            self.outbound_format = None
        elif self.outbound_format is None:
            self.errors.append("media before the bridge's start message")
        else:
            self._outbound_media(body)

    def _outbound_start(self, start: dict[str, Any]) -> None:
        if self.outbound_format is not None:
            self.errors.append("a second start without a stop (the codec cannot change)")
        fmt = start.get("mediaFormat")
        encoding = fmt.get("encoding") if type(fmt) is dict else None
        rate = fmt.get("sampleRate") if type(fmt) is dict else None
        if encoding not in WIRE_ENCODINGS:
            self.errors.append(f"start with encoding {encoding!r}")
            return
        ours, native = WIRE_ENCODINGS[encoding]
        if rate is not None and rate != native:  # e.g. PCM16 at 8000 Hz: VoxEngine refuses it
            self.errors.append(f"start with {encoding} at {rate} Hz (it means {native} Hz)")
            return
        self.outbound_starts += 1
        self.outbound_format = (ours, native)
        self._next_chunk = self._next_timestamp = 0
        self._resampler = Resampler(native, self.rate) if native != self.rate else None

    def _outbound_media(self, media: dict[str, Any]) -> None:
        assert self.outbound_format is not None
        encoding, _ = self.outbound_format
        payload = self._decode_b64(media.get("payload"))
        if not payload or len(payload) % codecs.bytes_per_sample(encoding):
            self.errors.append("media without a whole base64 payload")
            return
        if media.get("chunk") != self._next_chunk:
            self.errors.append(f"chunk {media.get('chunk')!r}, expected {self._next_chunk}")
        if media.get("timestamp") != self._next_timestamp:
            self.errors.append(
                f"timestamp {media.get('timestamp')!r}, expected {self._next_timestamp}"
            )
        pcm = codecs.decode(encoding, payload)
        self._next_chunk = (media.get("chunk") if type(media.get("chunk")) is int else 0) + 1
        self._next_timestamp += len(pcm)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        self._play(np.asarray(pcm, dtype=np.int16))
