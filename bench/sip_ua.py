"""The SIP benchmark's callers: many SIP user agents (UAC) over UDP in one asyncio loop, each
with its own signalling and RTP sockets, as a carrier's trunk would place calls.

A ``SipCall`` sends an INVITE (PCMU and telephone-event offered; retransmitted on the RFC 3261
T1 schedule), ACKs the 200 OK, answers an in-dialog BYE, hangs up with its own BYE. While
connected it sends 20 ms of G.711 every 20 ms (``Callers.tick`` drives every call from one
clock, as a carrier's media gateway would) and notes what comes back: the first packet, the
first packet with sound in it (the agent's first audio), gaps. Timestamps are
``time.monotonic()``: everything runs on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from bridge import codecs

SILENT_RMS = 200.0  # a 20 ms packet louder than this (16-bit RMS) carries sound
T1 = 0.5


def _mulaw_rms(payload: bytes) -> float:
    pcm = np.asarray(codecs.mulaw_decode(payload)).astype(np.float64)
    return float(np.sqrt((pcm**2).mean())) if len(pcm) else 0.0


@dataclass
class Received:
    first_at: float | None = None
    first_sound_at: float | None = None
    packets: int = 0
    last_at: float | None = None
    gaps: list[float] = field(default_factory=list)  # inter-arrival times, seconds


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, received: Received) -> None:
        self.received = received

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        r = self.received
        if len(data) < 12 or data[1] & 0x7F != 0:  # PCMU only (telephone-event ignored)
            return
        if r.first_at is None:
            r.first_at = now
        if r.last_at is not None:
            r.gaps.append(now - r.last_at)
        r.last_at = now
        r.packets += 1
        if r.first_sound_at is None and _mulaw_rms(data[12:]) > SILENT_RMS:
            r.first_sound_at = now


class _Sip(asyncio.DatagramProtocol):
    def __init__(self, call: SipCall) -> None:
        self.call = call
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.call.on_message(data.decode(errors="replace"), addr)


def _header(message: str, name: str) -> str | None:
    found = re.search(rf"^{name}\s*:\s*(.*)$", message, re.IGNORECASE | re.MULTILINE)
    return found.group(1).strip() if found else None


class SipCall:
    """One call from ``caller`` to ``callee`` at ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int], callee: str, caller: str) -> None:
        self.target, self.callee, self.caller = target, callee, caller
        self.call_id = f"{uuid.uuid4().hex}@bench"
        self.tag = uuid.uuid4().hex[:10]
        self.to_tag: str | None = None
        self.cseq = 1
        self.branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        self.sip = _Sip(self)
        self.received = Received()
        self.rtp_transport: asyncio.DatagramTransport | None = None
        self.remote_rtp: tuple[str, int] | None = None
        self.local_sip = self.local_rtp = 0
        self.invited_at: float | None = None
        self.answered_at: float | None = None
        self.final_status: int | None = None
        self.ended_by_peer = False
        self.answered = asyncio.Event()
        self.finished = asyncio.Event()
        self.bye_answered = asyncio.Event()
        self.sequence, self.timestamp, self.ssrc = 0, 0, random.getrandbits(32)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.sip, local_addr=("127.0.0.1", 0))
        assert self.sip.transport is not None
        self.local_sip = self.sip.transport.get_extra_info("sockname")[1]
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Rtp(self.received), local_addr=("127.0.0.1", 0)
        )
        self.rtp_transport = transport
        self.local_rtp = transport.get_extra_info("sockname")[1]

    # -- signalling ------------------------------------------------------------------------

    def _headers(self, method: str, cseq: int, branch: str) -> list[str]:
        to = f"<sip:{self.callee}@{self.target[0]}>" + (
            f";tag={self.to_tag}" if self.to_tag else ""
        )
        return [
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_sip};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.caller}@127.0.0.1>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.caller}@127.0.0.1:{self.local_sip}>",
            "User-Agent: voxagent-bench",
        ]

    def _send(self, start: str, headers: list[str], body: str = "") -> None:
        assert self.sip.transport is not None
        extra = ["Content-Type: application/sdp"] if body else []
        lines = [start, *headers, *extra, f"Content-Length: {len(body.encode())}", "", body]
        self.sip.transport.sendto("\r\n".join(lines).encode(), self.target)

    def _sdp(self) -> str:
        return "\r\n".join([
            "v=0", f"o=- {self.ssrc} 1 IN IP4 127.0.0.1", "s=bench", "c=IN IP4 127.0.0.1",
            "t=0 0", f"m=audio {self.local_rtp} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=ptime:20", "a=sendrecv",
            "",
        ])  # fmt: skip

    async def invite(self, timeout: float = 30) -> bool:
        """INVITE; True once a 200 OK is ACKed, False on a final refusal or timeout."""
        uri = f"sip:{self.callee}@{self.target[0]}:{self.target[1]}"
        sdp = self._sdp()
        self.invited_at = time.monotonic()
        deadline = self.invited_at + timeout
        wait = T1
        while self.final_status is None and time.monotonic() < deadline:
            self._send(f"INVITE {uri} SIP/2.0", self._headers("INVITE", 1, self.branch), sdp)
            try:
                await asyncio.wait_for(self.finished.wait(), wait)
            except TimeoutError:
                wait = min(wait * 2, 4.0)
        return self.final_status == 200

    def on_message(self, text: str, addr: tuple[str, int]) -> None:
        first = text.split("\r\n", 1)[0]
        if first.startswith("SIP/2.0"):
            status = int(first.split()[1])
            cseq = _header(text, "CSeq") or ""
            if cseq.endswith("BYE"):
                self.bye_answered.set()
                return
            if status < 200:
                return
            if status == 200 and self.answered_at is None:
                self.answered_at = time.monotonic()
                to = _header(text, "To") or ""
                tag = re.search(r"tag=([^;>\s]+)", to)
                self.to_tag = tag.group(1) if tag else None
                self.remote_rtp = _remote_rtp(text, addr[0])
                self.answered.set()
            if cseq.endswith("INVITE"):
                self._ack(status)
                self.final_status = self.final_status or status
                self.finished.set()
            return
        method = first.split()[0]
        if method in ("BYE", "CANCEL", "INFO", "NOTIFY", "OPTIONS"):
            self._reply(text, 200, "OK")
            if method == "BYE":
                self.ended_by_peer = True
        elif method == "INVITE":  # a re-INVITE: we take it as is
            self._reply(text, 200, "OK", self._sdp())

    def _ack(self, status: int) -> None:
        uri = f"sip:{self.callee}@{self.target[0]}:{self.target[1]}"
        branch = self.branch if status != 200 else "z9hG4bK" + uuid.uuid4().hex[:16]
        self._send(f"ACK {uri} SIP/2.0", self._headers("ACK", 1, branch))

    def _reply(self, request: str, status: int, reason: str, body: str = "") -> None:
        keep = [f"{n}: {_header(request, n)}" for n in ("Via", "From", "To", "Call-ID", "CSeq")]
        self._send(f"SIP/2.0 {status} {reason}", keep, body)

    async def bye(self, timeout: float = 5) -> None:
        if self.final_status != 200 or self.ended_by_peer:
            return
        self.cseq += 1
        uri = f"sip:{self.callee}@{self.target[0]}:{self.target[1]}"
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        deadline = time.monotonic() + timeout
        while not self.bye_answered.is_set() and time.monotonic() < deadline:
            self._send(f"BYE {uri} SIP/2.0", self._headers("BYE", self.cseq, branch))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bye_answered.wait(), T1)

    def close(self) -> None:
        for t in (self.sip.transport, self.rtp_transport):
            if t is not None:
                t.close()

    # -- media -----------------------------------------------------------------------------

    def send_frame(self, payload: bytes) -> None:
        if self.remote_rtp is None or self.rtp_transport is None or self.ended_by_peer:
            return
        header = bytes([0x80, 0x00]) + self.sequence.to_bytes(2, "big")
        header += self.timestamp.to_bytes(4, "big") + self.ssrc.to_bytes(4, "big")
        self.rtp_transport.sendto(header + payload, self.remote_rtp)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(payload)) & 0xFFFFFFFF

    @property
    def setup_s(self) -> float | None:
        if self.invited_at is None or self.answered_at is None:
            return None
        return self.answered_at - self.invited_at

    @property
    def first_audio_s(self) -> float | None:
        if self.invited_at is None or self.received.first_sound_at is None:
            return None
        return self.received.first_sound_at - self.invited_at


def _remote_rtp(message: str, default_host: str) -> tuple[str, int] | None:
    body = message.split("\r\n\r\n", 1)[-1]
    host = re.search(r"^c=IN IP4 (\S+)", body, re.MULTILINE)
    port = re.search(r"^m=audio (\d+)", body, re.MULTILINE)
    if not port:
        return None
    return (host.group(1) if host else default_host, int(port.group(1)))


class Callers:
    """Every benchmark call, and the one clock that feeds them all 20 ms of caller audio."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.calls: list[SipCall] = []
        self.payloads = payloads
        self.lateness: list[float] = []
        self._clock: asyncio.Task[None] | None = None

    def start_clock(self) -> None:
        self._clock = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        began = time.monotonic()
        n = 0
        while True:
            n += 1
            due = began + n * 0.02
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self.lateness.append(max(0.0, time.monotonic() - due))
            for call in self.calls:
                if call.answered.is_set():
                    call.send_frame(self.frame_for(call, n))

    def frame_for(self, call: SipCall, tick: int) -> bytes:
        """What ``call`` sends on the ``tick``-th 20 ms of the clock."""
        return self.payloads[tick % len(self.payloads)]

    async def place(self, target: tuple[str, int], callee: str, caller: str,
                    timeout: float = 30) -> SipCall:  # fmt: skip
        call = SipCall(target, callee, caller)
        await call.open()
        self.calls.append(call)
        await call.invite(timeout)
        return call

    async def hang_up_all(self) -> None:
        await asyncio.gather(*(c.bye() for c in self.calls), return_exceptions=True)
        if self._clock is not None:
            self._clock.cancel()
        for call in self.calls:
            call.close()


def caller_audio(seconds: float = 2.0) -> list[bytes]:
    """20 ms mu-law packets of faint noise (a caller's line, never digital silence)."""
    rng = np.random.default_rng(7)
    pcm = (rng.standard_normal(int(8000 * seconds)) * 60).astype(np.int16)
    return [codecs.mulaw_encode(pcm[i : i + 160]) for i in range(0, len(pcm), 160)]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
