"""Twilio Media Streams, bidirectional (``<Connect><Stream>``), in the bridge's terms.

Wire format: https://www.twilio.com/docs/voice/media-streams/websocket-messages (summary and
mapping in ``docs/telephony-protocols.md``). Twilio sends ``connected``, ``start`` (once),
``media`` every 20 ms (160 bytes of 8 kHz mu-law), ``dtmf``, ``mark`` (the echo of ours) and
``stop``; we send ``media``, ``mark`` and ``clear``, each naming the stream.

Error codes raised by ``parse``: ``invalid_json``, ``invalid_message``, ``missing_field``,
``invalid_field``, ``bad_payload`` (not base64, or empty), ``not_started`` (media before
``start``), ``already_started`` (a second ``start``), ``stream_mismatch`` (another stream's
SID), ``unsupported_media_format``.
"""

from __future__ import annotations

import json

from bridge.messages import (
    Connected,
    Dtmf,
    Ignored,
    MarkPlayed,
    Media,
    MediaFormat,
    Message,
    ProtocolError,
    Started,
    Stopped,
)
from bridge.protocols import wire

TWILIO_FORMAT = MediaFormat("mulaw", 8000)  # the only format Twilio streams, both ways


class TwilioMediaStreams:
    """One Twilio stream: parses what Twilio sends, writes what we send back."""

    channel = "twilio_media_streams"
    frame_ms = 20
    supports_marks = True

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self.sequence_number: int | None = None  # of the last message parsed, when it had one
        self._media_head = ""

    # -- Twilio -> us ---------------------------------------------------------------------
    def parse(self, text: str) -> Message:
        message = wire.load(text)
        event = message.get("event")
        if event == "media":  # the hot path first
            return self._media(message)
        if type(event) is not str:
            raise ProtocolError("missing_field", "event is missing or not a string")
        if event == "connected":
            return Connected()
        self.sequence_number = wire.integer(message, "sequenceNumber", "sequenceNumber")
        if event == "start":
            return self._start(message)
        if event in ("dtmf", "mark", "stop"):
            self._same_stream(message)
        if event == "dtmf":
            dtmf = wire.obj(message, "dtmf", "dtmf")
            return Dtmf(wire.dtmf_digit(dtmf.get("digit"), "dtmf.digit"))
        if event == "mark":
            return MarkPlayed(wire.text(wire.obj(message, "mark", "mark"), "name", "mark.name"))
        if event == "stop":
            return Stopped()
        return Ignored(event)

    def _media(self, message: dict) -> Message:
        if self.stream_sid is None:
            raise ProtocolError("not_started", "a media message before the start message")
        self._same_stream(message)
        media = wire.obj(message, "media", "media")
        track = media.get("track")
        if track is not None and track != "inbound":
            return Ignored("media")  # only <Start><Stream track="both"> sends the other side
        payload = wire.payload(media, "payload", "media.payload")
        chunk = wire.integer(media, "chunk", "media.chunk")
        timestamp = wire.integer(media, "timestamp", "media.timestamp")
        self.sequence_number = wire.integer(message, "sequenceNumber", "sequenceNumber")
        return Media(payload, chunk, timestamp)

    def _start(self, message: dict) -> Started:
        if self.stream_sid is not None:
            raise ProtocolError("already_started", "a second start message")
        start = wire.obj(message, "start", "start")
        stream_sid = start.get("streamSid") or message.get("streamSid")
        if type(stream_sid) is not str or not stream_sid:
            raise ProtocolError("missing_field", "start.streamSid is missing")
        call_sid = wire.text(start, "callSid", "start.callSid")
        account_sid = wire.optional_text(start, "accountSid", "start.accountSid")
        tracks = start.get("tracks", ["inbound"])
        if type(tracks) is not list or not all(type(t) is str for t in tracks):
            raise ProtocolError("invalid_field", "start.tracks must be a list of strings")
        fmt = wire.obj(start, "mediaFormat", "start.mediaFormat")
        encoding, rate = fmt.get("encoding"), fmt.get("sampleRate")
        channels = fmt.get("channels", 1)
        if encoding != "audio/x-mulaw" or rate not in (8000, "8000") or channels not in (1, "1"):
            raise ProtocolError(
                "unsupported_media_format",
                f"expected audio/x-mulaw, 8000 Hz, mono; got {encoding!r:.30}, {rate!r:.10} Hz,"
                f" {channels!r:.10} channels",
            )
        parameters = wire.parameters(start.get("customParameters"), "start.customParameters")
        self.stream_sid, self.call_sid, self.account_sid = stream_sid, call_sid, account_sid
        self._media_head = f'{{"event":"media","streamSid":{json.dumps(stream_sid)},"media":'
        return Started(
            stream_id=stream_sid, provider_call_id=call_sid, media_format=TWILIO_FORMAT,
            parameters=parameters, tracks=tuple(tracks),
        )  # fmt: skip

    def _same_stream(self, message: dict) -> None:
        sid = message.get("streamSid")
        if sid is not None and self.stream_sid is not None and sid != self.stream_sid:
            raise ProtocolError("stream_mismatch", f"streamSid {sid!r:.40} is not this stream")

    # -- us -> Twilio ---------------------------------------------------------------------
    def outbound_format(self) -> MediaFormat:
        return TWILIO_FORMAT

    def open_outbound(self) -> str | None:
        """Nothing to announce: Twilio plays whatever ``media`` it gets."""
        return None

    def close_outbound(self) -> str | None:
        return None

    def media(self, payload: bytes) -> str:
        """``payload``: mu-law 8 kHz bytes (any length; 160 is one 20 ms frame)."""
        self._require_start()
        return f'{self._media_head}{{"payload":"{wire.b64(payload)}"}}}}'

    def mark(self, name: str) -> str:
        self._require_start()
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> str:
        self._require_start()
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})

    def _require_start(self) -> None:
        if self.stream_sid is None:
            raise RuntimeError("nothing can be sent to Twilio before its start message")
