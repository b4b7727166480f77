"""sipd, our SIP endpoint, driven by a real SIP client (sipp) against a fake platform API and a
fake media bridge of the test's own: the Go process as the stack runs it, on ports of its own.

The caller's signalling is sipp's (scenario files written here); its RTP is a UDP socket of the
test, named in the SDP sipp offers, so the test hears what sipd plays and speaks into the call
(G.711 frames and RFC 2833 keys).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from infra.settings import Settings
from infra.stack import sipd as sipd_stack
from tests.support.baresip import free_port
from tests.support.sip_platform import Sipd

pytestmark = pytest.mark.integration

SIPP = "/usr/bin/sipp"
SECRET = "test-sip-secret-" + "x" * 16
TOKEN = "stream-token-123"
CLEARING = "stream-token-clear-then-hang-up"  # the bridge clears its queue, then hangs up
PLAYED = bytes([0x2A]) * 160  # what the bridge plays: never PCMU silence (0xFF)
SPOKEN = bytes([0x11]) * 160  # what the caller says
AFTER_CLEAR = bytes([0x33]) * 160


# --- the fake platform API -----------------------------------------------------------------

NONCE = "5f2b1c9a0d"


def digest_valid(invite: dict[str, Any], username: str, password: str) -> bool:
    """RFC 2617 digest check of the ``authorization`` sipd passed on (as the API does)."""
    header = invite["authorization"] or ""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header.removeprefix("Digest ")))
    if fields.get("username") != username or fields.get("nonce") != NONCE:
        return False

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - SIP digest is MD5

    ha1 = md5(f"{username}:{fields['realm']}:{password}")
    ha2 = md5(f"INVITE:{fields['uri']}")
    if "qop" in fields:
        parts = [ha1, NONCE, fields["nc"], fields["cnonce"], fields["qop"], ha2]
    else:
        parts = [ha1, NONCE, ha2]
    return fields.get("response") == md5(":".join(parts))


class FakeApi:
    """``/api/sip/*`` as the platform answers them, with every request kept."""

    def __init__(self, bridge_url: str) -> None:
        self.bridge_url = bridge_url
        self.invites: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.transfers: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.auth_headers.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != f"Bearer {SECRET}":
                    return self._answer(401, {"code": "invalid_sip_secret"})
                if self.path == "/api/sip/invite":
                    api.invites.append(body)
                    return self._answer(200, api.decide(body))
                (api.statuses if self.path == "/api/sip/status" else api.transfers).append(body)
                return self._answer(200, {})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def decide(self, invite: dict[str, Any]) -> dict[str, Any]:
        user = invite["to_user"]
        if user.startswith("404"):
            return {"action": "refuse", "status": 404, "reason": "unknown_number"}
        if user.startswith("486"):
            return {"action": "refuse", "status": 486, "reason": "busy"}
        if user.startswith("401") and not digest_valid(invite, "alice", "alice-password"):
            return {"action": "challenge", "realm": "voxagent", "nonce": NONCE}
        return {
            "action": "connect",
            "call_id": f"call-{invite['sip_call_id']}",
            "stream_url": self.bridge_url,
            "token": CLEARING if user.startswith("777") else TOKEN,
            "codec": "PCMU",
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the fake media bridge -----------------------------------------------------------------


@dataclass
class BridgeStream:
    """What one sipd stream sent the bridge."""

    events: list[dict[str, Any]] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    ws: ServerConnection | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    def send(self, message: bytes | dict[str, Any]) -> None:
        """The bridge sends sipd audio (bytes) or an event, from the test's thread."""
        assert self.ws is not None and self.loop is not None
        data = message if isinstance(message, bytes) else json.dumps(message)
        asyncio.run_coroutine_threadsafe(self.ws.send(data), self.loop).result(5)


class FakeBridge:
    """A WebSocket server at ``/streams/sip``: on ``start`` it plays ``PLAYED`` ten times
    then a mark; every stream is kept in ``streams`` (a queue of BridgeStream, at start)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.streams: queue.Queue[BridgeStream] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stop_serving: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/streams/sip"

    async def _handle(self, ws: ServerConnection) -> None:
        stream = BridgeStream(ws=ws, loop=self.loop)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    stream.frames.append(message)
                    continue
                event = json.loads(message)
                stream.events.append(event)
                if event.get("event") == "start":
                    self.streams.put(stream)
                    if event["token"] == CLEARING:
                        for _ in range(100):  # 2 s of audio, cut short at once
                            await ws.send(PLAYED)
                        await ws.send(json.dumps({"event": "mark", "name": "interrupted"}))
                        await asyncio.sleep(0.2)
                        await ws.send(json.dumps({"event": "clear"}))
                        await ws.send(AFTER_CLEAR)
                        await ws.send(json.dumps({"event": "mark", "name": "after-clear"}))
                        continue
                    for _ in range(10):
                        await ws.send(PLAYED)
                    await ws.send(json.dumps({"event": "mark", "name": "greeting"}))
                if event == {"event": "mark", "name": "after-clear"}:
                    await ws.send(json.dumps({"event": "hangup"}))
        except websockets.ConnectionClosed:
            pass
        finally:
            stream.closed.set()

    async def _serve(self, ready: threading.Event) -> None:
        self.stop_serving = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", self.port):
            ready.set()
            await self.stop_serving.wait()

    def __enter__(self) -> FakeBridge:
        self.thread.start()
        ready = threading.Event()
        asyncio.run_coroutine_threadsafe(self._serve(ready), self.loop)
        assert ready.wait(10), "the fake bridge did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stop_serving is not None:
            self.loop.call_soon_threadsafe(self.stop_serving.set)
        time.sleep(0.1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def next_stream(self, timeout: float = 10) -> BridgeStream:
        return self.streams.get(timeout=timeout)


# --- the caller: sipp for SIP, a socket for RTP ---------------------------------------------


def _scenario(name: str, body: str) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
{body}
</scenario>
"""


INVITE = """  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+15550001111@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio RTP_PORT RTP/AVP 0 8 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=sendrecv
    ]]>
  </send>
"""

ACK = """  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""

REFUSED = _scenario(
    "refused",
    INVITE.replace("RTP_PORT", "40000")
    + """  <recv response="100" optional="true"/>
  <recv response="404">
    <action>
      <ereg regexp="X-Voxagent-Reason: unknown_number" search_in="msg" check_it="true"
            assign_to="r"/>
    </action>
  </recv>
"""
    + ACK
    + '  <Reference variables="r"/>\n',
)


def _answered(rtp_port: int, talk_ms: int) -> str:
    """INVITE, 200 OK with PCMU, ACK, ``talk_ms`` of call, BYE."""
    return _scenario(
        "answered",
        INVITE.replace("RTP_PORT", str(rtp_port))
        + """  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 0 101" search_in="body" check_it="true" assign_to="m"/>
      <ereg regexp="a=rtpmap:0 PCMU/8000" search_in="body" check_it="true" assign_to="p"/>
    </action>
  </recv>
"""
        + ACK.replace("[last_To:]", "[last_To:]")
        + f"""  <pause milliseconds="{talk_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:sipd@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <Reference variables="m,p"/>
""",
    )


def run_sipp(folder: Path, scenario: str, service: str, target: str, transport: str = "u1"
             ) -> subprocess.Popen[bytes]:  # fmt: skip
    path = folder / f"{service}.xml"
    path.write_text(scenario)
    argv = [
        SIPP, target, "-sf", str(path), "-s", service, "-m", "1", "-i", "127.0.0.1",
        "-p", str(free_port()), "-t", transport, "-timeout", "30s", "-timeout_error",
        "-trace_err", "-error_file", str(folder / f"{service}-errors.log"), "-nostdin",
    ]  # fmt: skip
    return subprocess.Popen(argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finished(proc: subprocess.Popen[bytes], folder: Path, service: str) -> int:
    code = proc.wait(timeout=60)
    errors = folder / f"{service}-errors.log"
    detail = errors.read_text(errors="replace")[-3000:] if errors.exists() else ""
    stderr = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
    assert code == 0, f"sipp exit {code}: {stderr}\n{detail}"
    return code


def rtp(payload: bytes, seq: int, ts: int, pt: int = 0, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, 0x1234) + payload


class RtpPeer:
    """The caller's RTP socket: hears sipd, speaks to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.sipd: tuple[str, int] | None = None

    def receive(self, until: float) -> list[bytes]:
        """Every RTP payload of PCMU (type 0) heard before ``until`` (monotonic)."""
        heard: list[bytes] = []
        while time.monotonic() < until:
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                break
            self.sipd = addr
            if len(data) >= 12 and data[1] & 0x7F == 0:
                heard.append(data[12:])
        return heard

    def send(self, packet: bytes) -> None:
        assert self.sipd is not None, "nothing heard from sipd yet: its RTP port is unknown"
        self.sock.sendto(packet, self.sipd)

    def close(self) -> None:
        self.sock.close()


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sipd_binary() -> Path:
    return sipd_stack.build(Settings(), print)


@dataclass
class Rig:
    api: FakeApi
    bridge: FakeBridge
    sipd: Sipd
    target: str
    folder: Path


@pytest.fixture
def rig(sipd_binary: Path, tmp_path: Path) -> Iterator[Rig]:
    sip_port, control_port = free_port(), free_port()
    rtp_base = 30000 + (sip_port % 2000) * 10
    with FakeBridge() as bridge, FakeApi(bridge.url) as api:
        env = {
            "SIPD_SIP_ADDR": f"127.0.0.1:{sip_port}",
            "SIPD_CONTROL_ADDR": f"127.0.0.1:{control_port}",
            "SIPD_API_URL": api.url,
            "SIPD_SECRET": SECRET,
            "SIPD_PUBLIC_HOST": "127.0.0.1",
            "SIPD_RTP_PORTS": f"{rtp_base}-{rtp_base + 19}",
            "SIPD_REALM": "voxagent",
        }
        sipd = Sipd(sipd_binary, env, tmp_path).start()
        try:
            yield Rig(api, bridge, sipd, f"127.0.0.1:{sip_port}", tmp_path)
        finally:
            sipd.stop()
        log = sipd.log.read_text(errors="replace")
        assert SECRET not in log, "sipd logged its secret"
        assert "Authorization" not in log


def control(rig: Rig, method: str, path: str, body: dict[str, Any] | None = None,
            secret: str | None = SECRET, timeout: float = 5
            ) -> tuple[int, dict[str, Any]]:  # fmt: skip
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(rig.sipd.control_url + path, data=data, method=method)  # noqa: S310
    if secret is not None:
        req.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            text = resp.read()
            return resp.status, json.loads(text) if text else {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


# --- tests ---------------------------------------------------------------------------------


def test_health_answers_without_the_secret_and_the_rest_wants_it(rig: Rig) -> None:
    assert control(rig, "GET", "/health", secret=None) == (200, {"ok": True, "calls": 0})
    status, body = control(rig, "POST", "/calls/nope/hangup", secret=None)
    assert (status, body["code"]) == (401, "invalid_sip_secret")
    status, body = control(rig, "POST", "/calls/nope/hangup", secret="wrong")
    assert status == 401
    status, body = control(rig, "POST", "/calls/nope/hangup")
    assert (status, body["code"]) == (404, "unknown_call")
    status, body = control(rig, "POST", "/calls", {"call_id": "x", "to": "not a uri"})
    assert (status, body["code"]) == (400, "invalid_request")
    assert control(rig, "GET", "/stats", secret=None)[0] == 401


def test_an_invite_the_api_refuses_gets_its_status_and_reason(rig: Rig) -> None:
    proc = run_sipp(rig.folder, REFUSED, "404000", rig.target)
    finished(proc, rig.folder, "404000")
    [invite] = rig.api.invites
    assert invite["to_user"] == "404000"
    assert invite["from_user"] == "+15550001111"
    assert invite["from_display"] == "Test Caller"
    assert invite["transport"] == "udp"
    assert invite["codecs"] == ["PCMU", "PCMA"]
    assert invite["method"] == "INVITE"
    assert invite["source_ip"] == "127.0.0.1"
    assert invite["authorization"] is None
    assert set(rig.api.auth_headers) == {f"Bearer {SECRET}"}
    assert rig.bridge.streams.empty()


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_an_answered_call_streams_both_ways_and_ends_with_stop(rig: Rig, transport: str) -> None:
    peer = RtpPeer()
    try:
        scenario = _answered(peer.port, 4000)
        proc = run_sipp(rig.folder, scenario, "+15557654321", rig.target, transport)
        stream = rig.bridge.next_stream()
        [start] = stream.named("start")
        assert start["token"] == TOKEN
        assert start["codec"] == "PCMU"
        assert start["sample_rate"] == 8000
        assert start["call_id"].startswith("call-")
        assert start["sip_call_id"] == rig.api.invites[0]["sip_call_id"]
        assert rig.api.invites[0]["transport"] == {"u1": "udp", "t1": "tcp"}[transport]

        # what the bridge plays arrives as 20 ms PCMU packets, then its mark comes back
        heard = peer.receive(until=time.monotonic() + 1.5)
        played = [p for p in heard if p == PLAYED]
        assert len(played) == 10, f"{len(played)} of 10 played frames heard"
        assert all(len(p) == 160 for p in heard)
        assert {"event": "mark", "name": "greeting"} in stream.events

        # what the caller says reaches the bridge as raw payloads, and a key press once
        assert control(rig, "POST", "/stats/reset")[0] == 204
        rtp_in = control(rig, "GET", "/stats")[1]["counters"]["rtp_in"]
        for i in range(5):
            peer.send(rtp(SPOKEN, seq=i, ts=i * 160))
        for n, end in enumerate([False, False, True, True, True]):
            event = struct.pack("!BBH", 5, (0x80 if end else 0) | 10, 160 * (n + 1))
            peer.send(rtp(event, seq=10 + n, ts=5000, pt=101))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            stream.frames.count(SPOKEN) < 5 or not stream.named("dtmf")
        ):
            time.sleep(0.05)
        assert stream.frames.count(SPOKEN) == 5
        assert stream.named("dtmf") == [{"event": "dtmf", "digit": "5"}]
        status, health = control(rig, "GET", "/health")
        assert health["calls"] == 1
        # sipd times its own hop: each caller packet read -> written to the bridge's socket
        status, stats = control(rig, "GET", "/stats")
        assert status == 200 and stats["active_calls"] == 1, stats
        assert stats["inbound_latency"]["count"] == 5, stats
        assert 0 <= stats["inbound_latency"]["p99_ms"] <= stats["inbound_latency"]["max_ms"]
        assert stats["counters"]["rtp_in"] - rtp_in == 5 and stats["counters"]["rtp_out"], stats

        finished(proc, rig.folder, "+15557654321")  # sipp hung up (BYE, 200)
        assert stream.closed.wait(5), "sipd did not close the stream after the BYE"
        assert stream.events[-1] == {"event": "stop", "reason": "hangup"}
    finally:
        peer.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(rig.api.statuses) < 2:
        time.sleep(0.05)
    assert [s["status"] for s in rig.api.statuses] == ["in-progress", "completed"]
    assert control(rig, "GET", "/health")[1]["calls"] == 0


def _trunk(rtp_port: int) -> str:
    """A carrier's trunk: challenges the INVITE (digest, checked by sipp), rings, answers with
    PCMU, takes a REFER (202, NOTIFY with sipfrag 200), then expects sipd's BYE."""
    reply = """      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:trunk@[local_ip]:[local_port];transport=[transport]>"""
    return _scenario(
        "trunk",
        f"""  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 401 Unauthorized
{reply}
      WWW-Authenticate: Digest realm="trunk", nonce="4bd1f1c3", algorithm=MD5
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="INVITE">
    <action>
      <verifyauth assign_to="authorized" username="trunkuser" password="trunkpass"/>
    </action>
  </recv>
  <nop hide="true" test="authorized" next="authorized"/>
  <send next="refused">
    <![CDATA[
      SIP/2.0 403 Forbidden
{reply}
      Content-Length: 0

    ]]>
  </send>
  <label id="authorized"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
{reply}
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
{reply}
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=trunk 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {rtp_port} RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=sendrecv
    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="REFER">
    <action>
      <ereg regexp="Refer-To: &lt;sip:\\+15559876543@127.0.0.1:[0-9]+>" search_in="msg"
            check_it="true" assign_to="referto"/>
      <ereg regexp="From: [^\\r\\n]*;tag=([^;> \\r\\n]+)" search_in="msg" check_it="true"
            assign_to="junk,sipdtag"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 202 Accepted
{reply}
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      NOTIFY sip:sipd@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:+15551234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: <sip:+15550001111@127.0.0.1>;tag=[$sipdtag]
      Call-ID: [call_id]
      CSeq: 1 NOTIFY
      Contact: <sip:trunk@[local_ip]:[local_port];transport=[transport]>
      Event: refer
      Subscription-State: terminated;reason=noresource
      Content-Type: message/sipfrag
      Content-Length: [len]

      SIP/2.0 200 OK
    ]]>
  </send>
  <recv response="200"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="refused"/>
  <Reference variables="referto,junk,sipdtag"/>
""",
    )


def test_an_outbound_call_authenticates_streams_and_is_transferred(rig: Rig) -> None:
    peer = RtpPeer()
    trunk_port = free_port()
    path = rig.folder / "trunk.xml"
    path.write_text(_trunk(peer.port))
    proc = subprocess.Popen(
        [SIPP, "-sf", str(path), "-i", "127.0.0.1", "-p", str(trunk_port), "-m", "1",
         "-timeout", "30s", "-timeout_error", "-trace_err",
         "-error_file", str(rig.folder / "trunk-errors.log"), "-nostdin"],
        cwd=rig.folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # sipp binds its port
        call = {
            "call_id": "out-1",
            "to": f"sip:+15551234567@127.0.0.1:{trunk_port}",
            "from_user": "+15550001111",
            "trunk": {
                "address": f"127.0.0.1:{trunk_port}",
                "transport": "udp",
                "username": "trunkuser",
                "password": "trunkpass",
            },  # fmt: skip
            "stream_url": rig.bridge.url,
            "token": TOKEN,
            "codec_preference": ["PCMU", "PCMA"],
            "timeout_seconds": 20,
        }
        status, body = control(rig, "POST", "/calls", call)
        assert status == 202, body
        assert body["sip_call_id"]
        assert control(rig, "POST", "/calls", call)[0] == 409  # one call per id

        stream = rig.bridge.next_stream()
        [start] = stream.named("start")
        assert (start["call_id"], start["token"], start["codec"]) == ("out-1", TOKEN, "PCMU")
        assert start["sip_call_id"] == body["sip_call_id"]
        heard = peer.receive(until=time.monotonic() + 1.0)
        assert heard.count(PLAYED) == 10

        status, _ = control(rig, "POST", "/calls/out-1/transfer", {"target": "tel:+15559876543"})
        assert status == 202
        finished(proc, rig.folder, "trunk")  # REFER, NOTIFY 200, then sipd's BYE
        assert stream.closed.wait(5)
        assert stream.events[-1] == {"event": "stop", "reason": "transfer"}
    finally:
        peer.close()
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(rig.api.statuses) < 3:
        time.sleep(0.05)
    assert [(s["status"], s["sip_code"]) for s in rig.api.statuses] == [
        ("ringing", 180),
        ("in-progress", 200),
        ("completed", None),
    ]
    assert [(t["call_id"], t["outcome"], t["sip_code"]) for t in rig.api.transfers] == [
        ("out-1", "completed", 200)
    ]
    assert "trunkpass" not in rig.sipd.log.read_text()


def _hung_up_by_sipd(rtp_port: int) -> str:
    """INVITE, 200 OK, ACK, then sipd's BYE."""
    return _scenario(
        "hung-up",
        INVITE.replace("RTP_PORT", str(rtp_port))
        + """  <recv response="100" optional="true"/>
  <recv response="200"/>
"""
        + ACK
        + """  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
""",
    )


def test_clear_drops_queued_audio_and_marks_and_the_bridge_hangs_up(rig: Rig) -> None:
    peer = RtpPeer()
    try:
        proc = run_sipp(rig.folder, _hung_up_by_sipd(peer.port), "777", rig.target)
        stream = rig.bridge.next_stream()
        heard = peer.receive(until=time.monotonic() + 2.5)
        finished(proc, rig.folder, "777")  # sipd sent BYE when the bridge hung up
    finally:
        peer.close()
    played = heard.count(PLAYED)
    assert 0 < played < 50, f"{played} frames of the cleared audio were played"
    assert heard.count(AFTER_CLEAR) == 1
    assert heard.index(AFTER_CLEAR) > max(i for i, p in enumerate(heard) if p == PLAYED)
    marks = [e["name"] for e in stream.named("mark")]
    assert marks == ["after-clear"], "a cleared mark was echoed, or the kept one was not"
    assert stream.closed.wait(5)
    assert stream.events[-1] == {"event": "stop", "reason": "hangup"}


CHALLENGED = _scenario(
    "challenged",
    INVITE.replace("RTP_PORT", "40002")
    + """  <recv response="100" optional="true"/>
  <recv response="401" auth="true">
    <action>
      <ereg regexp="WWW-Authenticate: Digest realm=.voxagent., nonce=.5f2b1c9a0d., algorithm=MD5"
            search_in="msg" check_it="true" assign_to="w"/>
    </action>
  </recv>
"""
    + ACK
    + INVITE.replace("RTP_PORT", "40002").replace(
        "CSeq: 1 INVITE",
        "CSeq: 2 INVITE\n      [authentication username=alice password=alice-password]",
    )
    + """  <recv response="100" optional="true"/>
  <recv response="200"/>
"""
    + ACK.replace("CSeq: 1 ACK", "CSeq: 2 ACK")
    + """  <pause milliseconds="500"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:sipd@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Test Caller" <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <Reference variables="w"/>
""",
)


def test_a_challenged_invite_comes_back_with_credentials_the_api_checks(rig: Rig) -> None:
    proc = run_sipp(rig.folder, CHALLENGED, "401001", rig.target)
    finished(proc, rig.folder, "401001")
    first, second = rig.api.invites
    assert first["authorization"] is None
    assert second["authorization"].startswith("Digest ")
    assert 'username="alice"' in second["authorization"]
    assert first["sip_call_id"] == second["sip_call_id"]
    stream = rig.bridge.next_stream()
    assert stream.closed.wait(5)
    assert stream.events[-1] == {"event": "stop", "reason": "hangup"}


# --- warm transfer ---------------------------------------------------------------------------

CALLER_SAYS = bytes([0x44]) * 160  # the caller, once joined to the target
DESK_SAYS = bytes([0x55]) * 160  # the human at the desk


def _desk(rtp_port: int, answer: str = "200", hang_up_after_ms: int | None = None) -> str:
    """A desk phone (UAS): rings, then answers 200 with PCMU (its RTP: the test's socket) and
    waits for BYE (or sends its own after ``hang_up_after_ms``); or refuses with ``answer``
    (e.g. 486)."""
    reply = """      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:desk@[local_ip]:[local_port];transport=[transport]>"""
    if answer != "200":
        return _scenario("desk", f"""  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 {answer} Busy Here
{reply}
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
""")  # fmt: skip
    ending = """  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>"""
    if hang_up_after_ms is not None:
        ending = f"""  <pause milliseconds="{hang_up_after_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [$contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:desk@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
      To: [$from]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>"""
    return _scenario("desk", f"""  <recv request="INVITE">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 0 101" search_in="body" check_it="true" assign_to="m"/>
      <ereg regexp="From: [^\\r\\n]*sip:\\+15550001111@" search_in="msg" check_it="true"
            assign_to="f"/>
      <ereg regexp="From: ([^\\r\\n]*)" search_in="msg" check_it="true" assign_to="junk,from"/>
      <ereg regexp="Contact: &lt;([^>]*)>" search_in="msg" check_it="true"
            assign_to="junk2,contact"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
{reply}
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
{reply}
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=desk 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio {rtp_port} RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=sendrecv
    ]]>
  </send>
  <recv request="ACK"/>
{ending}
  <Reference variables="m,f,junk,from,junk2,contact"/>
""")  # fmt: skip


def _start_desk(rig: Rig, scenario: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    path = rig.folder / "desk.xml"
    path.write_text(scenario)
    proc = subprocess.Popen(
        [SIPP, "-sf", str(path), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
         "-timeout", "30s", "-timeout_error", "-trace_err",
         "-error_file", str(rig.folder / "desk-errors.log"), "-nostdin"],
        cwd=rig.folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(0.5)  # sipp binds its port
    return proc, port


def _wait(condition: Any, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_a_warm_transfer_consults_the_target_then_joins_it_to_the_caller(rig: Rig) -> None:
    caller, desk = RtpPeer(), RtpPeer()
    desk_proc, desk_port = _start_desk(rig, _desk(desk.port))
    # the caller stays on the line for 9 s, then hangs up: sipd hangs up the desk too
    caller_proc = run_sipp(rig.folder, _answered(caller.port, 9000), "+15557654321", rig.target)
    try:
        stream = rig.bridge.next_stream()
        call_id = stream.named("start")[0]["call_id"]
        assert caller.receive(until=time.monotonic() + 1.0).count(PLAYED) == 10

        target = f"sip:desk@127.0.0.1:{desk_port}"
        status, body = control(rig, "POST", f"/calls/{call_id}/transfer",
                               {"target": target, "mode": "warm", "timeout_seconds": 10},
                               timeout=15)  # fmt: skip
        assert (status, body) == (200, {"state": "consulting"})

        # consulting: the bridge talks with the desk; the caller, on hold, is not heard
        for _ in range(5):
            stream.send(PLAYED)
        stream.send({"event": "mark", "name": "briefed"})
        heard = desk.receive(until=time.monotonic() + 1.0)
        assert heard.count(PLAYED) == 5, f"the desk heard {heard.count(PLAYED)} of 5 frames"
        assert _wait(lambda: {"event": "mark", "name": "briefed"} in stream.events)
        for i in range(5):
            desk.send(rtp(DESK_SAYS, seq=i, ts=i * 160))
            caller.send(rtp(CALLER_SAYS, seq=100 + i, ts=(100 + i) * 160))
        assert _wait(lambda: stream.frames.count(DESK_SAYS) == 5)
        assert CALLER_SAYS not in stream.frames, "the caller on hold was heard by the bridge"
        assert PLAYED not in caller.receive(until=time.monotonic() + 0.3)

        # the agent leaves: the stream stops (transfer) and caller and desk are joined
        stream.send({"event": "hangup"})
        assert stream.closed.wait(5)
        assert stream.events[-1] == {"event": "stop", "reason": "transfer"}
        assert _wait(lambda: rig.api.transfers)
        assert [(t["call_id"], t["outcome"], t["sip_code"]) for t in rig.api.transfers] == [
            (call_id, "completed", 200)
        ]
        for i in range(5):
            caller.send(rtp(CALLER_SAYS, seq=200 + i, ts=(200 + i) * 160))
            desk.send(rtp(DESK_SAYS, seq=200 + i, ts=(200 + i) * 160))
        event = struct.pack("!BBH", 7, 0x80 | 10, 800)  # key 7, end of event
        caller.send(rtp(event, seq=300, ts=9000, pt=101))
        desk_heard = _raw(desk, until=time.monotonic() + 1.0)
        assert [p for pt, p in desk_heard if pt == 0].count(CALLER_SAYS) == 5
        assert (101, event) in desk_heard, "the caller's key did not reach the desk"
        assert caller.receive(until=time.monotonic() + 1.0).count(DESK_SAYS) == 5

        finished(caller_proc, rig.folder, "+15557654321")  # the caller's BYE...
        finished(desk_proc, rig.folder, "desk")  # ...ends the desk's leg too
    finally:
        caller.close()
        desk.close()
        for proc in (caller_proc, desk_proc):
            if proc.poll() is None:
                proc.kill()
    assert _wait(lambda: len(rig.api.statuses) >= 2)
    assert [s["status"] for s in rig.api.statuses] == ["in-progress", "completed"]
    assert len(rig.api.transfers) == 1
    assert control(rig, "GET", "/health")[1]["calls"] == 0


def test_a_warm_transfer_the_target_refuses_answers_502_and_the_agent_keeps_the_caller(
    rig: Rig,
) -> None:
    caller = RtpPeer()
    desk_proc, desk_port = _start_desk(rig, _desk(0, answer="486"))
    caller_proc = run_sipp(rig.folder, _answered(caller.port, 3000), "+15557654321", rig.target)
    try:
        stream = rig.bridge.next_stream()
        call_id = stream.named("start")[0]["call_id"]
        assert caller.receive(until=time.monotonic() + 0.5)
        status, body = control(rig, "POST", f"/calls/{call_id}/transfer",
                               {"target": f"sip:desk@127.0.0.1:{desk_port}", "mode": "warm"},
                               timeout=15)  # fmt: skip
        assert (status, body["code"], body["sip_code"]) == (502, "transfer_failed", 486)
        finished(desk_proc, rig.folder, "desk")
        caller.send(rtp(CALLER_SAYS, seq=1, ts=160))
        assert _wait(lambda: CALLER_SAYS in stream.frames), "the caller is not heard any more"
        stream.send(PLAYED)
        assert PLAYED in caller.receive(until=time.monotonic() + 0.5)
        status, body = control(rig, "POST", f"/calls/{call_id}/transfer",
                               {"target": "sip:desk@127.0.0.1:1", "mode": "tepid"})  # fmt: skip
        assert (status, body["code"]) == (400, "invalid_request")
        finished(caller_proc, rig.folder, "+15557654321")
    finally:
        caller.close()
        for proc in (caller_proc, desk_proc):
            if proc.poll() is None:
                proc.kill()
    assert rig.api.transfers == []  # the 502 was the outcome: nothing reported besides


def _raw(peer: RtpPeer, until: float) -> list[tuple[int, bytes]]:
    """Every RTP packet heard before ``until``: (payload type, payload)."""
    heard: list[tuple[int, bytes]] = []
    while time.monotonic() < until:
        try:
            data, addr = peer.sock.recvfrom(2048)
        except TimeoutError:
            break
        peer.sipd = addr
        heard.append((data[1] & 0x7F, data[12:]))
    return heard


def test_a_target_that_hangs_up_while_consulted_gives_the_caller_back_to_the_agent(
    rig: Rig,
) -> None:
    caller, desk = RtpPeer(), RtpPeer()
    desk_proc, desk_port = _start_desk(rig, _desk(desk.port, hang_up_after_ms=1500))
    caller_proc = run_sipp(rig.folder, _answered(caller.port, 6000), "+15557654321", rig.target)
    try:
        stream = rig.bridge.next_stream()
        call_id = stream.named("start")[0]["call_id"]
        assert caller.receive(until=time.monotonic() + 0.5)
        status, body = control(rig, "POST", f"/calls/{call_id}/transfer",
                               {"target": f"sip:desk@127.0.0.1:{desk_port}", "mode": "warm"},
                               timeout=15)  # fmt: skip
        assert (status, body) == (200, {"state": "consulting"})
        finished(desk_proc, rig.folder, "desk")  # the desk hung up (its BYE answered 200)
        assert _wait(lambda: rig.api.transfers)
        [report] = rig.api.transfers
        assert (report["call_id"], report["outcome"]) == (call_id, "failed"), report
        # the caller is the agent's again: heard by the bridge, hearing it
        caller.send(rtp(CALLER_SAYS, seq=1, ts=160))
        assert _wait(lambda: CALLER_SAYS in stream.frames), "the caller is not heard again"
        stream.send(PLAYED)
        assert PLAYED in caller.receive(until=time.monotonic() + 0.5)
        assert not stream.closed.is_set()
        finished(caller_proc, rig.folder, "+15557654321")
        assert stream.closed.wait(5)
        assert stream.events[-1] == {"event": "stop", "reason": "hangup"}
    finally:
        caller.close()
        desk.close()
        for proc in (caller_proc, desk_proc):
            if proc.poll() is None:
                proc.kill()
