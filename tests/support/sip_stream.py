"""Our SIP service's media stream (``sipd`` -> the bridge's ``/streams/sip``), as ``sipd`` speaks
it: a ``start`` naming the call, its stream token and the negotiated codec (PCMU or PCMA,
8000 Hz), then the caller's audio as binary frames (one RTP payload each: 160 bytes, 20 ms),
``dtmf`` per key press, ``stop`` when the caller hangs up.

From the bridge it takes binary G.711 into its playback buffer (as ``sipd`` queues it for RTP),
echoes each ``mark`` once the audio sent before it has played, and on ``clear`` drops the
buffer *and* every pending mark (a dropped mark is never echoed: that audio was not heard).
``hangup`` is recorded (``sipd`` would send BYE). Anything else is recorded in ``errors``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bridge import codecs
from tests.support.phone_stream import PhoneStream

ENCODINGS = {"PCMU": "mulaw", "PCMA": "alaw"}


class SipEmulator(PhoneStream):
    rate = 8000

    def __init__(
        self,
        url: str,
        parameters: dict[str, str] | None = None,
        *,
        codec: str = "PCMU",
        sip_call_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.codec = codec
        self.encoding = ENCODINGS[codec]
        super().__init__(url, headers=headers)
        self.parameters = dict(parameters or {})
        self.sip_call_id = sip_call_id or f"{uuid.uuid4().hex}@127.0.0.1"
        self.hangups = 0
        self.marks_dropped: list[str] = []  # pending when a clear came: never echoed

    def _opening(self) -> list[Any]:
        return [{
            "event": "start", "call_id": self.parameters.get("call_id", ""),
            "token": self.parameters.get("token", ""), "codec": self.codec, "sample_rate": 8000,
            "sip_call_id": self.sip_call_id,
        }]  # fmt: skip

    def _media_message(self, seq: int, payload: bytes, chunk: int, due: float) -> bytes:
        return payload

    def _stop_message(self, seq: int) -> dict[str, Any]:
        return {"event": "stop", "reason": "hangup"}

    async def dtmf(self, digit: str) -> None:
        """The caller presses a key (an RFC 2833 event, at its end)."""
        await self._send({"event": "dtmf", "digit": digit})

    async def _handle_binary(self, data: bytes) -> None:
        self.media_arrivals.append(time.monotonic())
        if not data:
            self.errors.append("an empty audio frame")
            return
        self._play(codecs.decode(self.encoding, data))

    async def _handle(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "mark":
            name = message.get("name")
            if type(name) is not str or not name:
                self.errors.append("mark without a name")
                return
            self._queue_mark(name)
        elif event == "clear":
            self.marks_dropped += await self._clear()
        elif event == "hangup":
            self.hangups += 1
        else:
            self.errors.append(f"unknown event {event!r}")

    async def _echo_mark(self, name: str, cleared: bool) -> None:
        await super()._echo_mark(name, cleared)
        await self._send({"event": "mark", "name": name})
