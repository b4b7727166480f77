"""LiveKit server of the local stack: built with ``go install`` from the Go module proxy."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra.stack.common import (
    Echo,
    ServiceStatus,
    cmdline,
    fail,
    pid_alive,
    port_open,
    read_pid,
    run,
    spawn,
    stop_pid,
    wait_until,
)
from infra.stack.system import apt_install, ensure_espeak, make_dirs, write_if_changed

if TYPE_CHECKING:
    from infra.settings import Settings

NAME = "livekit"
PACKAGE = "github.com/livekit/livekit-server/cmd/server"
MIN_GO = (1, 25)  # livekit-server v1.11.0's go.mod says `go 1.25.0`
SWITCHING_GO = (1, 21)  # from Go 1.21 on, `go` fetches the toolchain a module asks for
BUILD_TIMEOUT = 40 * 60
START_TIMEOUT = 60
DRAIN_TIMEOUT = 5  # after this, a second SIGTERM stops the server with participants still in
STOP_TIMEOUT = 15
# Settings livekit-server reads from the environment, over its config file: not inherited.
SERVER_ENV = ("NODE_IP", "UDP_PORT", "REDIS_HOST", "REDIS_PASSWORD")
# The caller's Go environment that the build honours (proxy, checksum database, private modules).
GO_ENV = ("GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOINSECURE", "GOTOOLCHAIN")


@dataclass(frozen=True)
class Paths:
    base: Path
    bindir: Path
    go: Path
    logs: Path

    @property
    def binary(self) -> Path:
        return self.bindir / "livekit-server"

    @property
    def config(self) -> Path:
        return self.base / "livekit.yaml"

    @property
    def pidfile(self) -> Path:
        return self.base / "livekit.pid"

    @property
    def log(self) -> Path:
        return self.logs / "livekit.log"

    @property
    def build_log(self) -> Path:
        return self.logs / "build.log"


def paths(settings: Settings) -> Paths:
    base = settings.stack.root / NAME
    return Paths(
        base=base,
        bindir=base / f"bin-{settings.livekit.version}",
        go=settings.stack.root / "go",
        logs=base / "logs",
    )


def running_pid(settings: Settings) -> int | None:
    return read_pid(paths(settings).pidfile, str(paths(settings).config))


# --- install -------------------------------------------------------------------------------


def _version(text: str) -> tuple[int, int] | None:
    found = re.search(r"(?:^|go|:)(\d+)\.(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _apt_candidate(package: str) -> tuple[int, int] | None:
    if shutil.which("apt-cache") is None:
        return None
    proc = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, check=False
    )
    found = re.search(r"Candidate:\s*(\S+)", proc.stdout)
    return _version(found.group(1)) if found and found.group(1) != "(none)" else None


def _need_go(settings: Settings, found: str) -> str:
    need = ".".join(map(str, MIN_GO))
    return (
        f"building livekit-server {settings.livekit.version} needs Go >= {need} (found: {found}). "
        f"Install Go {need} or newer from https://go.dev/dl/ (unpack it to /usr/local/go and put "
        "/usr/local/go/bin on PATH) — or any Go >= 1.21, which fetches the newer toolchain from "
        "the module proxy itself — then rerun `voxagent stack up`"
    )


def find_go(settings: Settings, echo: Echo) -> tuple[str, tuple[int, int]]:
    """The ``go`` program and its version; installs Debian's golang-go only when it can build."""
    go = shutil.which("go") or next(
        (c for c in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(c, os.X_OK)), None
    )
    if go is None:
        candidate = _apt_candidate("golang-go")
        if candidate is None or candidate < SWITCHING_GO:
            apt = f"apt's golang-go is {'.'.join(map(str, candidate))}" if candidate else ""
            fail(NAME, _need_go(settings, ", ".join(filter(None, ["no `go` on PATH", apt]))))
        apt_install(["golang-go"], service=NAME, echo=echo)
        go = shutil.which("go")
        if go is None:
            fail(NAME, "apt-get installed golang-go but `go` is not on PATH")
    proc = run([go, "version"], service=NAME, what="go version", env=_base_env())
    version = _version(proc.stdout.split("version", 1)[-1])
    if version is None or version < SWITCHING_GO:
        fail(NAME, _need_go(settings, f"{proc.stdout.strip()} at {go}"))
    return go, version


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GO") or k in GO_ENV}


def _build_env(p: Paths, go_version: tuple[int, int]) -> dict[str, str]:
    env = _base_env()
    env.update(
        GOPATH=str(p.go),
        GOMODCACHE=str(p.go / "pkg" / "mod"),
        GOCACHE=str(p.go / "cache"),
        GOBIN=str(p.bindir),
        GOFLAGS="-mod=mod -modcacherw",  # -modcacherw: `rm -rf .stack` works without chmod
        GOWORK="off",
        CGO_ENABLED="0",  # as upstream's Dockerfile: a static binary, no C compiler needed
    )
    if "GOTOOLCHAIN" not in env:
        env["GOTOOLCHAIN"] = "local" if go_version >= MIN_GO else "auto"
    return env


def ensure_binary(settings: Settings, echo: Echo) -> Path:
    """``go install`` livekit-server ``<version>`` into ``bin-<version>`` unless it is there."""
    p = paths(settings)
    if p.binary.exists():
        return p.binary
    go, go_version = find_go(settings, echo)
    make_dirs(None, p.base, p.bindir, p.logs, p.go, mode=0o755)
    version = settings.livekit.version
    echo(
        f"[{NAME}] building livekit-server {version} with go install "
        "(first run: several minutes)..."
    )
    if go_version < MIN_GO:
        echo(f"[{NAME}] go {'.'.join(map(str, go_version))} will fetch a newer toolchain first")
    began = time.monotonic()
    _go_install([go, "install", "-v", f"{PACKAGE}@{version}"], _build_env(p, go_version), p, echo)
    built = p.bindir / "server"
    if not built.exists():
        fail(NAME, f"go install finished but {built} is missing", p.build_log)
    built.replace(p.binary)
    echo(f"[{NAME}] built {p.binary} in {time.monotonic() - began:.0f}s")
    return p.binary


def _go_install(argv: list[str], env: dict[str, str], p: Paths, echo: Echo) -> None:
    """Run the build with its output in ``build.log``, a progress line a minute, a time limit."""
    began = time.monotonic()
    with open(p.build_log, "wb") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=p.base,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            fail(NAME, f"command not found: {argv[0]}")
        try:
            while True:
                try:
                    code = proc.wait(timeout=60)
                    break
                except subprocess.TimeoutExpired:
                    minutes = (time.monotonic() - began) / 60
                    if minutes * 60 > BUILD_TIMEOUT:
                        fail(NAME, f"go install timed out after {minutes:.0f} min", p.build_log)
                    echo(f"[{NAME}] still building ({minutes:.0f} min, {_progress(p)})...")
        finally:
            if proc.poll() is None:  # timed out or interrupted: stop the whole build
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code != 0:
        fail(NAME, f"go install failed (exit {code})", p.build_log)


def _progress(p: Paths) -> str:
    try:
        lines = p.build_log.read_text(errors="replace").splitlines()
    except OSError:
        return "no output yet"
    downloads = sum(1 for line in lines if line.startswith("go: downloading"))
    packages = sum(1 for line in lines if line and not line.startswith(("go: ", "#", " ")))
    return f"{downloads} modules downloaded, {packages} packages compiled"


# --- config and process --------------------------------------------------------------------


def _config(settings: Settings) -> str:
    lk, q = settings.livekit, json.dumps  # JSON strings are YAML strings
    lines = [
        "# Written by `voxagent stack up` from VOXAGENT_LIVEKIT__*; rewritten on every run.",
        f"port: {lk.port}",
        "bind_addresses: [127.0.0.1]",
        "keys:",
        f"  {q(lk.api_key)}: {q(lk.api_secret.get_secret_value())}",
        "rtc:",
        f"  tcp_port: {lk.rtc_tcp_port}  # 0: no ICE/TCP (its listener binds every interface)",
        f"  udp_port: {lk.rtc_udp_port}",
        "  node_ip: 127.0.0.1  # set, with use_external_ip off: no STUN lookups",
        "  use_external_ip: false",
        "  enable_loopback_candidate: true",
        "  interfaces:",
        "    includes: [lo]",
        "room:",
        "  empty_timeout: 300",
        "  departure_timeout: 20",
        "logging:",
        "  level: info",
    ]
    if lk.webhook_url:
        lines += ["webhook:", f"  api_key: {q(lk.api_key)}", f"  urls: [{q(lk.webhook_url)}]"]
    return "\n".join(lines) + "\n"


def health_error(settings: Settings, timeout: float = 2.0) -> str | None:
    """None when ``GET /`` answers ``OK`` (the server's health check); else why not."""
    port = settings.livekit.port
    if not port_open(port):
        return "port closed"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as resp:
            body = resp.read(200).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read(200).decode('utf-8', 'replace').splitlines()[0]}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
    return None if body == "OK" else f"unexpected answer {body[:40]!r}"


def _udp_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _check_ports(settings: Settings) -> None:
    lk = settings.livekit
    taken = [f"{port}/tcp" for port in (lk.port, lk.rtc_tcp_port) if port and port_open(port)]
    taken += [f"{lk.rtc_udp_port}/udp"] if _udp_taken(lk.rtc_udp_port) else []
    if taken:
        fail(
            NAME,
            f"port(s) {', '.join(taken)} on 127.0.0.1 already taken by another process; stop it "
            "or set VOXAGENT_LIVEKIT__PORT / __RTC_TCP_PORT / __RTC_UDP_PORT",
        )


def _server_env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_") and k not in SERVER_ENV
    }


def up(settings: Settings, echo: Echo) -> None:
    ensure_espeak(settings, service=NAME, echo=echo)
    p = paths(settings)
    make_dirs(None, settings.stack.root, mode=0o755)
    make_dirs(None, p.base, p.logs)
    binary = ensure_binary(settings, echo)
    changed = write_if_changed(p.config, _config(settings), mode=0o600)
    pid = running_pid(settings)
    if pid is not None and (changed or str(binary) not in cmdline(pid)):
        echo(f"[{NAME}] configuration or version changed; restarting (pid {pid})...")
        _stop(pid)
        pid = None
    if pid is None:
        _check_ports(settings)
        echo(
            f"[{NAME}] starting livekit-server {settings.livekit.version} on "
            f"127.0.0.1:{settings.livekit.port}..."
        )
        spawn(
            [binary, "--config", p.config],
            pidfile=p.pidfile,
            log=p.log,
            cwd=p.base,
            env=_server_env(),
        )
    started = running_pid(settings)
    wait_until(
        lambda: health_error(settings) is None,
        service=NAME,
        what=f"OK from http://127.0.0.1:{settings.livekit.port}/",
        timeout=START_TIMEOUT,
        log=p.log,
        alive=lambda: started is not None and running_pid(settings) == started,
    )


def status(settings: Settings) -> ServiceStatus:
    error = health_error(settings)
    return ServiceStatus(
        NAME, settings.livekit.port, running_pid(settings), error is None, error or ""
    )


def _stop(pid: int) -> None:
    """SIGTERM drains (waits for participants to leave); a second one forces, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ChildProcessError):  # our own child (tests): reap it
        os.waitpid(pid, os.WNOHANG)
    if pid_alive(pid) and not stop_pid(pid, timeout=STOP_TIMEOUT):
        fail(NAME, f"pid {pid} did not exit after SIGTERM and SIGKILL")


def down(settings: Settings, echo: Echo) -> None:
    pid = running_pid(settings)
    p = paths(settings)
    if pid is None:
        echo(f"[{NAME}] not running")
    else:
        echo(f"[{NAME}] stopping (pid {pid})...")
        _stop(pid)
    p.pidfile.unlink(missing_ok=True)
