"""Twilio Media Streams as Twilio plays it (bidirectional, ``<Connect><Stream>``).

Sends ``connected``, then ``start`` (sequenceNumber "1"; realistic 34-character SIDs, tracks
["inbound"], audio/x-mulaw 8000 Hz mono, the test's custom parameters), then one ``media`` per
20 ms: 160 bytes of mu-law, chunk counting from "1", timestamp in ms since the stream started,
every counter a string as Twilio writes them. ``dtmf`` and ``stop`` as documented.

From the bridge it takes ``media`` (mu-law 8000 Hz for this stream's SID) into its playback
buffer, echoes each ``mark`` once the audio sent before it has played, and on ``clear`` empties
the buffer and echoes the pending marks at once. Anything else is recorded in ``errors``.
Reference: https://www.twilio.com/docs/voice/media-streams/websocket-messages
"""

from __future__ import annotations

import secrets
from typing import Any

from bridge import codecs
from tests.support.phone_stream import PhoneStream, b64


def sid(prefix: str) -> str:
    """A Twilio SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


class TwilioEmulator(PhoneStream):
    encoding = "mulaw"
    rate = 8000

    def __init__(
        self,
        url: str,
        parameters: dict[str, str] | None = None,
        *,
        account_sid: str | None = None,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(url, headers=headers)
        self.parameters = dict(parameters or {})
        self.account_sid = account_sid or sid("AC")
        self.call_sid = call_sid or sid("CA")
        self.stream_sid = stream_sid or sid("MZ")
        self._sequence = 1  # "connected" has none; "start" is 1

    def _opening(self) -> list[Any]:
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        return [connected, self._start_message]

    def _start_message(self, seq: int) -> dict[str, Any]:
        return {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.parameters,
            },
            "streamSid": self.stream_sid,
        }

    def _media_message(self, seq: int, payload: bytes, chunk: int, due: float) -> dict[str, Any]:
        return {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": "inbound",
                "chunk": str(chunk + 1),
                "timestamp": str(int((due - self._stream_start) * 1000)),
                "payload": b64(payload),
            },
            "streamSid": self.stream_sid,
        }

    def _stop_message(self, seq: int) -> dict[str, Any]:
        return {
            "event": "stop",
            "sequenceNumber": str(seq),
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        }

    async def dtmf(self, digit: str) -> None:
        """The caller presses a key."""
        await self._send(
            lambda seq: {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": str(seq),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def _handle(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            self.errors.append(f"unknown event {event!r}")
            return
        if message.get("streamSid") != self.stream_sid:
            self.errors.append(f"{event} for stream {message.get('streamSid')!r}")
            return
        if event == "media":
            media = message.get("media")
            payload = self._decode_b64(media.get("payload")) if type(media) is dict else None
            if not payload:
                self.errors.append("media without a base64 payload")
                return
            self._play(codecs.mulaw_decode(payload))
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if type(mark) is dict else None
            if type(name) is not str:
                self.errors.append("mark without a name")
                return
            self._queue_mark(name)
        else:
            for name in await self._clear():
                await self._echo_mark(name, cleared=True)

    async def _echo_mark(self, name: str, cleared: bool) -> None:
        await super()._echo_mark(name, cleared)
        await self._send(
            lambda seq: {
                "event": "mark",
                "sequenceNumber": str(seq),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )
