"""VoxImplant WebSocket media streams (``call.sendMediaTo(ws)`` / ``ws.sendMediaTo(call)``).

Wire format: https://voximplant.com/docs/guides/media-streams/format (summary and mapping in
``docs/telephony-protocols.md``). Each direction is its own stream: ``start`` (the format,
``customParameters``, an optional ``tag``), ``media`` chunks, ``stop``. So the bridge opens its
own outbound stream (``open_outbound``) before the first ``media`` and stops it at the end.

VoxImplant has no marks (``mark`` returns None: the session times replies itself) and no DTMF
on the socket: our scenario forwards each ``CallEvents.ToneReceived`` key as
``{"customEvent": "dtmf", "digit": "5"}``. Its buffer clear is a scenario call,
``webSocket.clearMediaBuffer()``; ``clear`` sends the custom message our scenario turns into
that call (``{"customEvent": "clear"}``).

Error codes raised by ``parse``: ``invalid_json``, ``invalid_message``, ``missing_field``,
``invalid_field``, ``bad_payload``, ``not_started``, ``already_started``,
``unsupported_media_format``.
"""

from __future__ import annotations

import json
import uuid

from bridge import codecs
from bridge.messages import (
    Dtmf,
    Ignored,
    Media,
    MediaFormat,
    Message,
    ProtocolError,
    Started,
    Stopped,
)
from bridge.protocols import wire

# WebSocketAudioEncoding values (voxengine.d.ts) -> (our encoding, accepted rates, default rate).
# PCM16 at 8000 Hz appears in VoxImplant's own examples of what it sends, so it is accepted
# inbound; outbound, 8 kHz linear PCM is always announced as PCM8 (see OUTBOUND_NAMES).
ENCODINGS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "PCM8": ("pcm16", (8000,), 8000),
    "PCM16": ("pcm16", (16000, 8000), 16000),
    "ULAW": ("mulaw", (8000,), 8000),
    "ALAW": ("alaw", (8000,), 8000),
    "AUDIO/X-MULAW": ("mulaw", (8000,), 8000),  # the MIME name some of its samples use
    "AUDIO/X-ALAW": ("alaw", (8000,), 8000),
}
OUTBOUND_NAMES = {
    ("pcm16", 8000): "PCM8",
    ("pcm16", 16000): "PCM16",
    ("mulaw", 8000): "ULAW",
    ("alaw", 8000): "ALAW",
}
DTMF_EVENT = "dtmf"  # {"customEvent": "dtmf", "digit": "5"}: our scenario's ToneReceived
CLEAR_EVENT = "clear"  # {"customEvent": "clear"}: our scenario calls webSocket.clearMediaBuffer()


class VoxImplantStream:
    """One VoxImplant socket: the call's stream in, the bridge's stream out."""

    channel = "voximplant"
    frame_ms = 20
    supports_marks = False

    def __init__(self, outbound_tag: str | None = None) -> None:
        self.outbound_tag = outbound_tag  # must match the scenario's ws.sendMediaTo(call, {tag})
        self.tag: str | None = None  # the inbound stream's tag
        self.media_format: MediaFormat | None = None
        self.sequence_number: int | None = None  # of the last message parsed
        self._first_chunk: int | None = None
        self._first_timestamp = 0
        # outbound stream state
        self._out_started = False
        self._out_sequence = 0
        self._out_chunk = 0
        self._out_samples = 0
        self._out_bytes = 0

    # -- VoxImplant -> us -----------------------------------------------------------------
    def parse(self, text: str) -> Message:
        message = wire.load(text)
        event = message.get("event")
        if event == "media":
            return self._media(message)
        if type(event) is not str:
            custom = message.get("customEvent")
            if custom == DTMF_EVENT:  # our scenario forwards CallEvents.ToneReceived
                return Dtmf(wire.dtmf_digit(message.get("digit"), "digit"))
            if type(custom) is str:  # a scenario's own message, not part of the media stream
                return Ignored(custom)
            raise ProtocolError("missing_field", "event is missing or not a string")
        self.sequence_number = wire.integer(message, "sequenceNumber", "sequenceNumber")
        if event == "start":
            return self._start(message)
        if event == "stop":
            stop = message.get("stop")
            tag = stop.get("tag") if type(stop) is dict else message.get("tag")
            if self.media_format is not None and tag is not None and tag != self.tag:
                return Ignored("stop")  # another tagged stream on this socket
            self.media_format = None
            return Stopped()
        return Ignored(event)

    def _media(self, message: dict) -> Message:
        fmt = self.media_format
        if fmt is None:
            raise ProtocolError("not_started", "a media message before the start message")
        media = wire.obj(message, "media", "media")
        tag = media.get("tag", message.get("tag"))
        if tag is not None and tag != self.tag:
            return Ignored("media")  # another tagged stream on this socket
        payload = wire.payload(media, "payload", "media.payload")
        if fmt.encoding == "pcm16" and len(payload) % 2:
            raise ProtocolError("bad_payload", "media.payload has an odd number of PCM16 bytes")
        chunk = wire.integer(media, "chunk", "media.chunk")
        timestamp = wire.integer(media, "timestamp", "media.timestamp")  # in samples (RTP)
        self.sequence_number = wire.integer(message, "sequenceNumber", "sequenceNumber")
        if chunk is not None:  # RTP-like counters: renumber from 1, as Twilio's
            if self._first_chunk is None:
                self._first_chunk, self._first_timestamp = chunk, timestamp or 0
            chunk = chunk - self._first_chunk + 1
        timestamp_ms = None
        if timestamp is not None:
            timestamp_ms = (timestamp - self._first_timestamp) * 1000 // fmt.sample_rate
        return Media(payload, chunk, timestamp_ms)

    def _start(self, message: dict) -> Message:
        start = wire.obj(message, "start", "start")
        tag = start.get("tag", message.get("tag"))
        if tag is not None and type(tag) is not str:
            raise ProtocolError("invalid_field", "start.tag must be a string")
        if self.media_format is not None:
            if tag != self.tag:
                return Ignored("start")  # a second, differently tagged stream: not ours
            raise ProtocolError("already_started", "a second start message for this stream")
        fmt = wire.obj(start, "mediaFormat", "start.mediaFormat")
        self.media_format = _media_format(fmt)
        self.tag = tag
        self._first_chunk = None
        parameters = wire.parameters(start.get("customParameters"), "start.customParameters")
        return Started(
            stream_id=tag or uuid.uuid4().hex, provider_call_id=None,
            media_format=self.media_format, parameters=parameters, tracks=("inbound",),
        )  # fmt: skip

    # -- us -> VoxImplant -----------------------------------------------------------------
    def outbound_format(self) -> MediaFormat:
        """The format VoxImplant streams to us, so the scenario hears what it chose."""
        if self.media_format is None:
            raise RuntimeError("the outbound format follows the start message")
        return self.media_format

    def open_outbound(self) -> str:
        """The start of our stream to VoxImplant: send it once, before the first ``media``."""
        fmt = self.outbound_format()
        start: dict = {"mediaFormat": {"encoding": OUTBOUND_NAMES[fmt.encoding, fmt.sample_rate],
                                       "sampleRate": fmt.sample_rate}}  # fmt: skip
        if self.outbound_tag is not None:
            start["tag"] = self.outbound_tag
        self._out_started = True
        self._out_sequence = self._out_chunk = self._out_samples = self._out_bytes = 0
        return self._outbound("start", start)

    def media(self, payload: bytes) -> str:
        """``payload``: audio in ``outbound_format()``; chunk and timestamp (in samples) count
        on from the previous chunk, as VoxImplant's format asks."""
        if not self._out_started:
            raise RuntimeError("send open_outbound() to VoxImplant before the first media")
        assert self.media_format is not None
        media = {"chunk": self._out_chunk, "timestamp": self._out_samples,
                 "payload": wire.b64(payload)}  # fmt: skip
        if self.outbound_tag is not None:
            media["tag"] = self.outbound_tag
        self._out_chunk += 1
        self._out_samples += len(payload) // codecs.bytes_per_sample(self.media_format.encoding)
        self._out_bytes += len(payload)
        return self._outbound("media", media)

    def close_outbound(self) -> str | None:
        """The end of our stream (VoxImplant fires MEDIA_ENDED); None if it never started."""
        if not self._out_started or self.media_format is None:
            return None
        self._out_started = False
        duration_ms = self._out_samples * 1000 // self.media_format.sample_rate
        stop: dict = {"mediaInfo": {"bytesSent": self._out_bytes, "duration": duration_ms}}
        if self.outbound_tag is not None:
            stop["tag"] = self.outbound_tag
        return self._outbound("stop", stop)

    def mark(self, name: str) -> None:
        return None

    def clear(self) -> str:
        message: dict = {"customEvent": CLEAR_EVENT}
        if self.outbound_tag is not None:
            message["tag"] = self.outbound_tag
        return json.dumps(message)

    def _outbound(self, event: str, body: dict) -> str:
        text = json.dumps({"event": event, "sequenceNumber": self._out_sequence, event: body})
        self._out_sequence += 1
        return text


def _media_format(fmt: dict) -> MediaFormat:
    encoding = fmt.get("encoding")
    if type(encoding) is not str:
        raise ProtocolError("missing_field", "start.mediaFormat.encoding is missing")
    known = ENCODINGS.get(encoding.upper())
    if known is None:
        raise ProtocolError(
            "unsupported_media_format",
            f"encoding {encoding!r:.20} is not supported; use ULAW, ALAW, PCM8 or PCM16",
        )
    ours, rates, default_rate = known
    rate = wire.integer(fmt, "sampleRate", "start.mediaFormat.sampleRate") or default_rate
    channels = fmt.get("channels", 1)
    if rate not in rates or channels not in (1, "1"):
        raise ProtocolError(
            "unsupported_media_format",
            f"{encoding} at {rate} Hz with {channels!r:.10} channels is not supported",
        )
    return MediaFormat(ours, rate)
