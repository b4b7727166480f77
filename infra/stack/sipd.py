"""sipd, our SIP endpoint (Go, source in the repo's ``sipd/``): built with ``go build`` into
the stack folder when its sources change, started with ``SIPD_*`` from ``settings.telephony``.

Also installs the SIP tools the tests and the benchmark use: baresip (a real SIP phone) and
sipp (Debian ``sip-tester``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra.settings import REPO_ROOT
from infra.stack.common import (
    Echo,
    ServiceStatus,
    fail,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    wait_until,
)
from infra.stack.livekit import find_go
from infra.stack.system import apt_install, make_dirs, write_if_changed

if TYPE_CHECKING:
    from infra.settings import Settings

NAME = "sipd"
SOURCE = REPO_ROOT / "sipd"
MIN_GO = (1, 24)  # sipd/go.mod says `go 1.24.0`; an older go >= 1.21 fetches that toolchain
BUILD_TIMEOUT = 15 * 60
START_TIMEOUT = 30
STOP_TIMEOUT = 15  # sipd hangs up its calls (BYE) on SIGTERM, then exits
# Debian packages of the SIP tools, by the program each provides.
SIP_TOOLS = {"/usr/bin/baresip": "baresip-core", "/usr/bin/sipp": "sip-tester"}
ANY_ADDRESS = ("0.0.0.0", "::")  # noqa: S104 - a bind address, mapped to loopback to connect
GO_ENV = ("GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOINSECURE", "GOTOOLCHAIN")


@dataclass(frozen=True)
class Paths:
    base: Path
    go: Path

    @property
    def binary(self) -> Path:
        return self.base / "bin" / "sipd"

    @property
    def stamp(self) -> Path:
        """The source hash the binary was built from."""
        return self.base / "bin" / "sipd.sources"

    @property
    def env_file(self) -> Path:
        """The environment sipd runs with (holds the secret: mode 0600); a change restarts it."""
        return self.base / "sipd.env"

    @property
    def pidfile(self) -> Path:
        return self.base / "sipd.pid"

    @property
    def log(self) -> Path:
        return self.base / "logs" / "sipd.log"

    @property
    def build_log(self) -> Path:
        return self.base / "logs" / "build.log"


def paths(settings: Settings) -> Paths:
    return Paths(base=settings.stack.root / NAME, go=settings.stack.root / "go")


def binary(settings: Settings) -> Path:
    """Where ``build`` puts the sipd program (it may not be built yet)."""
    return paths(settings).binary


def running_pid(settings: Settings) -> int | None:
    return read_pid(paths(settings).pidfile, str(binary(settings)))


# --- build ---------------------------------------------------------------------------------


def source_hash(source: Path = SOURCE) -> str:
    """SHA-256 over sipd's Go sources, go.mod and go.sum (names and contents)."""
    digest = hashlib.sha256()
    files = sorted(source.glob("*.go")) + [source / "go.mod", source / "go.sum"]
    for path in files:
        if path.exists():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _go_env(p: Paths, go_version: tuple[int, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO") or k in GO_ENV}
    env.update(
        GOPATH=str(p.go),
        GOMODCACHE=str(p.go / "pkg" / "mod"),
        GOCACHE=str(p.go / "cache"),
        GOFLAGS="-mod=readonly -modcacherw",  # go.sum is committed: nothing is resolved anew
        GOWORK="off",
        CGO_ENABLED="0",
    )
    env.setdefault("GOTOOLCHAIN", "local" if go_version >= MIN_GO else "auto")
    return env


def build(settings: Settings, echo: Echo) -> Path:
    """``go build`` sipd unless the binary was built from the current sources; its path."""
    p = paths(settings)
    if not (SOURCE / "go.mod").exists():
        fail(NAME, f"no Go module at {SOURCE}")
    wanted = source_hash()
    if p.binary.exists() and p.stamp.exists() and p.stamp.read_text().strip() == wanted:
        return p.binary
    go, go_version = find_go(settings, echo)
    make_dirs(None, p.base, p.base / "bin", p.base / "logs", p.go, mode=0o755)
    echo(f"[{NAME}] building sipd from {SOURCE} with go build (first run: modules download)...")
    began = time.monotonic()
    partial = p.binary.with_name("sipd.partial")
    argv = [go, "build", "-trimpath", "-o", str(partial), "."]
    _run_build(argv, _go_env(p, go_version), p, echo)
    if not partial.exists():
        fail(NAME, f"go build finished but {partial} is missing", p.build_log)
    partial.replace(p.binary)
    p.stamp.write_text(wanted + "\n")
    echo(f"[{NAME}] built {p.binary} in {time.monotonic() - began:.0f}s")
    return p.binary


def _run_build(argv: list[str], env: dict[str, str], p: Paths, echo: Echo) -> None:
    """The build with its output in ``build.log``, a progress line every 30 s, a time limit."""
    began = time.monotonic()
    with open(p.build_log, "wb") as log:
        try:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=SOURCE, env=env, start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError:
            fail(NAME, f"command not found: {argv[0]}")
        try:
            while True:
                try:
                    code = proc.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - began
                    if elapsed > BUILD_TIMEOUT:
                        fail(NAME, f"go build timed out after {elapsed / 60:.0f} min", p.build_log)
                    echo(f"[{NAME}] still building ({elapsed:.0f}s)...")
        finally:
            if proc.poll() is None:  # timed out or interrupted: stop the whole build
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code != 0:
        fail(NAME, f"go build failed (exit {code})", p.build_log)


def ensure_sip_tools(echo: Echo) -> None:
    """baresip and sipp, which the SIP tests and the benchmark drive, from Debian."""
    missing = [package for program, package in SIP_TOOLS.items() if shutil.which(program) is None]
    if missing:
        echo(f"[{NAME}] the SIP tests need {' and '.join(missing)}")
        apt_install(missing, service=NAME, echo=echo)


# --- process -------------------------------------------------------------------------------


def environment(settings: Settings) -> dict[str, str]:
    """The ``SIPD_*`` variables sipd reads (docs/telephony.md), from ``settings``."""
    t, api = settings.telephony, settings.api
    api_host = "127.0.0.1" if api.host in ANY_ADDRESS else api.host
    return {
        "SIPD_SIP_ADDR": f"{t.sip_host}:{t.sip_port}",
        "SIPD_CONTROL_ADDR": f"{t.sip_host}:{t.sipd_control_port}",
        "SIPD_API_URL": f"http://{api_host}:{api.port}",
        "SIPD_SECRET": t.sip_secret.get_secret_value(),
        "SIPD_PUBLIC_HOST": t.sip_public_host,
        "SIPD_RTP_PORTS": t.sip_rtp_ports,
        "SIPD_REALM": t.sip_realm,
        "SIPD_API_TIMEOUT": str(t.sip_timeout_seconds),
    }


def control_url(settings: Settings) -> str:
    t = settings.telephony
    host = "127.0.0.1" if t.sip_host in ANY_ADDRESS else t.sip_host
    return f"http://{host}:{t.sipd_control_port}"


def health_error(settings: Settings, timeout: float = 2.0) -> str | None:
    """None when ``GET /health`` answers ``{"ok": true}``; else why not."""
    if not port_open(settings.telephony.sipd_control_port):
        return "port closed"
    try:
        with urllib.request.urlopen(control_url(settings) + "/health", timeout=timeout) as resp:  # noqa: S310
            body = json.loads(resp.read(2000))
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
    return None if isinstance(body, dict) and body.get("ok") is True else f"unexpected {body!r:.60}"


def up(settings: Settings, echo: Echo) -> None:
    ensure_sip_tools(echo)
    p = paths(settings)
    make_dirs(None, settings.stack.root, mode=0o755)
    make_dirs(None, p.base, p.base / "logs")
    program = build(settings, echo)
    env = environment(settings)
    text = "".join(f"{k}={v}\n" for k, v in sorted(env.items()))
    changed = write_if_changed(p.env_file, text, mode=0o600)
    pid = running_pid(settings)
    if pid is not None and (changed or _older(p.pidfile, than=program)):
        echo(f"[{NAME}] sources or settings changed; restarting (pid {pid})...")
        _stop(pid)
        pid = None
    if pid is None:
        t = settings.telephony
        if port_open(t.sipd_control_port):
            fail(NAME, f"port {t.sipd_control_port}/tcp already taken; set "
                 "VOXAGENT_TELEPHONY__SIPD_CONTROL_PORT")  # fmt: skip
        echo(f"[{NAME}] starting sipd: SIP {t.sip_host}:{t.sip_port} (udp, tcp), control "
             f"{control_url(settings)}...")  # fmt: skip
        base = {k: v for k, v in os.environ.items() if not k.startswith("SIPD_")}
        spawn([program], pidfile=p.pidfile, log=p.log, cwd=p.base, env={**base, **env})
    started = running_pid(settings)
    wait_until(
        lambda: health_error(settings) is None,
        service=NAME,
        what=f"GET {control_url(settings)}/health",
        timeout=START_TIMEOUT,
        log=p.log,
        alive=lambda: started is not None and running_pid(settings) == started,
    )


def _older(pidfile: Path, *, than: Path) -> bool:
    """Whether the process was started (its pid file written) before the binary was rebuilt."""
    try:
        return pidfile.stat().st_mtime < than.stat().st_mtime
    except OSError:
        return False


def status(settings: Settings) -> ServiceStatus:
    error = health_error(settings)
    return ServiceStatus(
        NAME, settings.telephony.sip_port, running_pid(settings), error is None, error or ""
    )


def _stop(pid: int) -> None:
    if not stop_pid(pid, timeout=STOP_TIMEOUT):
        fail(NAME, f"pid {pid} did not exit after SIGTERM and SIGKILL")


def down(settings: Settings, echo: Echo) -> None:
    pid = running_pid(settings)
    if pid is None:
        echo(f"[{NAME}] not running")
    else:
        echo(f"[{NAME}] stopping (pid {pid}): its calls are hung up...")
        _stop(pid)
    paths(settings).pidfile.unlink(missing_ok=True)
