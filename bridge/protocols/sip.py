"""Our SIP service's media stream (``sipd`` -> ``/streams/sip``), in the bridge's terms.

Wire format (the contract in ``docs/telephony-protocols.md``): text frames are JSON events,
binary frames are audio.

- ``sipd`` -> us, text: ``start`` (once: ``call_id``, ``token``, ``codec`` ``PCMU``/``PCMA``,
  ``sample_rate`` 8000, ``sip_call_id``), ``dtmf`` (``digit``, one per key press), ``mark``
  (the echo of ours, once the audio before it has gone out as RTP), ``stop`` (``reason``).
- ``sipd`` -> us, binary: the caller's G.711 as received (each RTP payload, normally 160 bytes).
- us -> ``sipd``, binary: G.711 in the negotiated codec; ``sipd`` packetises and paces it.
- us -> ``sipd``, text: ``mark`` (``name``), ``clear`` (drop every queued byte and every pending
  mark: a dropped mark is never echoed), ``hangup`` (``sipd`` sends BYE).

Error codes raised by ``parse``/``parse_binary``: ``invalid_json``, ``invalid_message``,
``missing_field``, ``invalid_field``, ``bad_payload`` (an empty binary frame), ``not_started``
(audio before ``start``), ``already_started`` (a second ``start``),
``unsupported_media_format``.
"""

from __future__ import annotations

import json
import uuid

from bridge.messages import (
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

CODECS = {"PCMU": MediaFormat("mulaw", 8000), "PCMA": MediaFormat("alaw", 8000)}
CLEAR = json.dumps({"event": "clear"})
HANGUP = json.dumps({"event": "hangup"})


class SipStream:
    """One ``sipd`` stream: G.711 both ways in binary frames, events in text frames."""

    channel = "sip"
    frame_ms = 20
    supports_marks = True

    def __init__(self) -> None:
        self.media_format: MediaFormat | None = None
        self.sip_call_id: str | None = None
        self.stop_reason: str | None = None

    # -- sipd -> us -----------------------------------------------------------------------
    def parse(self, text: str) -> Message:
        message = wire.load(text)
        event = message.get("event")
        if type(event) is not str:
            raise ProtocolError("missing_field", "event is missing or not a string")
        if event == "start":
            return self._start(message)
        if event == "dtmf":
            return Dtmf(wire.dtmf_digit(message.get("digit"), "digit"))
        if event == "mark":
            return MarkPlayed(wire.text(message, "name", "name"))
        if event == "stop":
            self.stop_reason = wire.optional_text(message, "reason", "reason")
            return Stopped()
        return Ignored(event)

    def parse_binary(self, data: bytes) -> Message:
        """One binary frame: the caller's audio, as RTP carried it."""
        if self.media_format is None:
            raise ProtocolError("not_started", "audio before the start message")
        if not data:
            raise ProtocolError("bad_payload", "an empty audio frame")
        return Media(bytes(data))

    def _start(self, message: dict) -> Started:
        if self.media_format is not None:
            raise ProtocolError("already_started", "a second start message")
        call_id = wire.text(message, "call_id", "call_id")
        token = wire.text(message, "token", "token")
        codec = wire.text(message, "codec", "codec")
        media_format = CODECS.get(codec.upper())
        rate = wire.integer(message, "sample_rate", "sample_rate") or 8000
        if media_format is None or rate != 8000:
            raise ProtocolError(
                "unsupported_media_format",
                f"expected PCMU or PCMA at 8000 Hz; got {codec!r:.20} at {rate} Hz",
            )
        sip_call_id = wire.optional_text(message, "sip_call_id", "sip_call_id")
        self.media_format, self.sip_call_id = media_format, sip_call_id
        return Started(
            stream_id=uuid.uuid4().hex, provider_call_id=sip_call_id, media_format=media_format,
            parameters={"call_id": call_id, "token": token}, tracks=("inbound",),
        )  # fmt: skip

    # -- us -> sipd -----------------------------------------------------------------------
    def outbound_format(self) -> MediaFormat:
        """The negotiated codec, both ways."""
        if self.media_format is None:
            raise RuntimeError("the outbound format follows the start message")
        return self.media_format

    def open_outbound(self) -> str | None:
        return None

    def close_outbound(self) -> str | None:
        """Before the bridge closes the socket: ``sipd`` hangs up (it would on close too)."""
        return HANGUP

    def media(self, payload: bytes) -> bytes:
        """``payload``: G.711 in the negotiated codec; sent as it is, in a binary frame."""
        if self.media_format is None:
            raise RuntimeError("nothing can be sent to sipd before its start message")
        return payload

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "name": name})

    def clear(self) -> str:
        return CLEAR
