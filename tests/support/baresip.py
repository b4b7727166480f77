"""A real SIP phone for the end-to-end tests: baresip (Debian ``baresip-core``), headless.

Each ``Phone`` is one baresip process with its own config folder: it listens for SIP on a
loopback port, speaks G.711 only, plays a WAV file as its microphone (module ``aufile``; what
it says is written before the call) and records what it hears (module ``sndfile`` writes the
decoded far end to ``<folder>/dump-*-dec.wav``). It is driven over ``ctrl_tcp`` (netstring
JSON commands): ``dial``, ``hangup``, ``sndcode`` (RFC 2833 DTMF). ``auto_answer`` phones pick
up incoming calls themselves (the outbound and transfer tests call them).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import wave
from pathlib import Path

import numpy as np

from tests.support.processes import stop_group

BARESIP = "/usr/bin/baresip"
RATE = 8000  # what the phone's microphone file and its recordings are in


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free for both TCP and UDP (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port for TCP and UDP")


def write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(pcm, dtype=np.int16).tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as src:
        data = np.frombuffer(src.readframes(src.getnframes()), dtype=np.int16)
        return data, src.getframerate()


class Phone:
    """One baresip user agent ``user@127.0.0.1:<sip_port>``."""

    def __init__(self, folder: Path, user: str, *, auto_answer: bool = False,
                 transport: str = "udp") -> None:  # fmt: skip
        self.folder = folder
        self.user = user
        self.auto_answer = auto_answer
        self.transport = transport
        self.sip_port = free_port()
        self.ctrl_port = free_port()
        self.mouth = folder / "mouth.wav"
        self.log = folder / "baresip.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._buffer = b""
        self.events: list[dict] = []

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def say(self, pcm: np.ndarray, rate: int, *, lead_s: float = 1.0, tail_s: float = 60) -> None:
        """What the phone's microphone plays once a call connects: ``lead_s`` of silence,
        the speech (resampled to 8 kHz), then silence (aufile stops the call's audio at the
        file's end)."""
        if rate != RATE:
            n = int(len(pcm) * RATE / rate)
            pcm = np.interp(np.linspace(0, len(pcm) - 1, n), np.arange(len(pcm)), pcm)
        silence = np.zeros(int(RATE * lead_s), np.int16)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_wav(
            self.mouth,
            np.concatenate([silence, pcm.astype(np.int16), np.zeros(int(RATE * tail_s), np.int16)]),
        )

    def _write_config(self) -> None:
        if not self.mouth.exists():
            self.say(np.zeros(0, np.int16), RATE, lead_s=0)
        listen = f"127.0.0.1:{self.sip_port}"
        config = f"""
poll_method epoll
sip_listen {listen}
sip_transports udp,tcp
audio_player sndfile,nil
audio_source aufile,{self.mouth}
audio_alert sndfile,nil
audio_srate 8000
audio_channels 1
ausrc_srate 8000
auplay_srate 8000
rtp_ports 30000-39999
jitter_buffer_delay 1-10
snd_path {self.folder}
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module sndfile.so
module account.so
module ctrl_tcp.so
module_app menu.so
ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}
dtmf_mode rtpevent
"""
        (self.folder / "config").write_text(config)
        answer = ";answermode=auto" if self.auto_answer else ""
        account = (f"<sip:{self.user}@127.0.0.1:{self.sip_port}>;regint=0"
                   f";audio_codecs=PCMU,PCMA{answer}\n")  # fmt: skip
        (self.folder / "accounts").write_text(account)
        (self.folder / "contacts").write_text("")

    def start(self) -> Phone:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_config()
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [BARESIP, "-f", str(self.folder)], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.folder,
        )  # fmt: skip
        out.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"baresip exited: {self.tail()}")
            with contextlib.suppress(OSError):
                self._ctrl = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=5)
                return self
            time.sleep(0.1)
        raise RuntimeError(f"baresip's control port never opened: {self.tail()}")

    def stop(self) -> None:
        if self._ctrl is not None:
            with contextlib.suppress(OSError):
                self._ctrl.close()
        stop_group(self.proc)

    def __enter__(self) -> Phone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    # -- control (netstrings of JSON) --------------------------------------------------------

    def command(self, command: str, params: str = "") -> None:
        assert self._ctrl is not None, "start the phone first"
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self._ctrl.sendall(str(len(body)).encode() + b":" + body + b",")

    def poll_events(self, timeout: float = 0.1) -> list[dict]:
        """Events (and command responses) the phone reported since the last poll."""
        assert self._ctrl is not None
        self._ctrl.settimeout(timeout)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                chunk = self._ctrl.recv(65536)
                if not chunk:
                    break
                self._buffer += chunk
        new: list[dict] = []
        while b":" in self._buffer:
            head, _, rest = self._buffer.partition(b":")
            size = int(head)
            if len(rest) < size + 1:
                break
            new.append(json.loads(rest[:size]))
            self._buffer = rest[size + 1 :]
        self.events.extend(new)
        return new

    def wait_event(self, kind: str, timeout: float = 30) -> dict:
        """The first event of type ``kind`` (``CALL_ESTABLISHED``, ``CALL_CLOSED``...)."""
        deadline = time.monotonic() + timeout
        seen = [e for e in self.events if e.get("type") == kind]
        while not seen:
            if time.monotonic() > deadline:
                kinds = [e.get("type") for e in self.events]
                raise TimeoutError(f"{self.user}: no {kind} in {timeout} s; {kinds}\n{self.tail()}")
            seen = [e for e in self.poll_events(0.2) if e.get("type") == kind]
        return seen[0]

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def hangup(self) -> None:
        self.command("hangup")

    def press(self, digits: str, gap_s: float = 0.4) -> None:
        for digit in digits:
            self.command("sndcode", digit)
            time.sleep(gap_s)

    # -- what the phone heard ----------------------------------------------------------------

    def heard(self) -> tuple[np.ndarray, int]:
        """Everything the phone played (the far end's decoded audio), all calls in order."""
        parts = sorted(self.folder.glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)
        if not parts:
            return np.zeros(0, np.int16), RATE
        pcm, rate = zip(*(read_wav(p) for p in parts), strict=True)
        return np.concatenate(pcm), rate[0]
