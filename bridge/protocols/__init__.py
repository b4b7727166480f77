"""The providers' media-stream wire formats, one stateful object per stream.

Every protocol class has the same surface (``bridge.session`` relies on nothing else):

- ``channel``, ``frame_ms`` (20), ``supports_marks``;
- ``parse(text) -> bridge.messages.Message``, raising ``ProtocolError`` for a bad message;
  a protocol whose audio comes in binary frames (SIP) also has ``parse_binary(data)``, and
  its ``media`` returns ``bytes`` (sent as a binary frame) instead of text;
- ``outbound_format() -> MediaFormat``: what the provider plays back (known after ``start``);
- ``open_outbound() -> str | None``: send once before the first ``media`` (VoxImplant's own
  stream start; None for Twilio), and ``close_outbound() -> str | None`` before hanging up;
- ``media(payload) -> str | bytes``, ``mark(name) -> str | None``;
- ``clear() -> str | None``: the provider's way to drop the audio it has buffered (Twilio's
  ``clear``, VoxImplant's ``{"customEvent": "clear"}``, the SIP service's ``clear`` frame).
  ``StreamSession.barge_in`` sends it the moment the agent yields to the caller; a protocol
  whose provider echoes pending marks on clear needs nothing more (the session voids them).

Wire formats and how they map: ``docs/telephony-protocols.md``.
"""

from __future__ import annotations

from bridge.protocols.sip import SipStream
from bridge.protocols.twilio import TwilioMediaStreams
from bridge.protocols.voximplant import VoxImplantStream

PROTOCOLS: dict[str, type[TwilioMediaStreams] | type[VoxImplantStream] | type[SipStream]] = {
    TwilioMediaStreams.channel: TwilioMediaStreams,
    VoxImplantStream.channel: VoxImplantStream,
    SipStream.channel: SipStream,
}

__all__ = ["PROTOCOLS", "SipStream", "TwilioMediaStreams", "VoxImplantStream"]
