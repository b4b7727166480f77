"""What a provider's media stream says, in the bridge's own terms.

Each provider protocol (``bridge/protocols``) parses its WebSocket text messages into these
and writes the bridge's replies in its own wire format. The session (``bridge/session.py``)
only ever sees these types, so Twilio Media Streams and VoxImplant behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ProtocolError(ValueError):
    """A message the protocol cannot accept: ``code`` is stable, the text says what is wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class MediaFormat:
    """The audio on the wire: ``encoding`` is one of ``mulaw``, ``alaw``, ``pcm16`` (little
    endian, signed 16-bit); mono."""

    encoding: str
    sample_rate: int


@dataclass(frozen=True)
class Connected:
    """The provider opened the stream (Twilio's ``connected``; VoxImplant has none)."""


@dataclass(frozen=True)
class Started:
    """The stream's metadata. ``parameters`` are the custom parameters our TwiML or scenario
    set (the call id and the stream token among them)."""

    stream_id: str
    provider_call_id: str | None
    media_format: MediaFormat
    parameters: dict[str, str] = field(default_factory=dict)
    tracks: tuple[str, ...] = ("inbound",)


@dataclass(frozen=True)
class Media:
    """One chunk of the caller's audio, still encoded (``payload`` is the decoded base64)."""

    payload: bytes
    chunk: int | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class MarkPlayed:
    """The provider finished playing the audio sent before the mark of this name."""

    name: str


@dataclass(frozen=True)
class Stopped:
    """The provider ended the stream (the caller hung up, or the call moved on)."""


@dataclass(frozen=True)
class Ignored:
    """A well-formed message the bridge has no use for (an unknown event, a non-inbound track)."""

    event: str


Message = Connected | Started | Media | Dtmf | MarkPlayed | Stopped | Ignored
