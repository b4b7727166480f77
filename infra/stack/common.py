"""Shared helpers of the local stack: processes, pid files, users, packages, readiness."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

Echo = Callable[[str], None]

TEMPLATES = Path(__file__).resolve().parent


class StackError(RuntimeError):
    """A stack step failed; the message says what, and which log to read."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    answering: bool
    detail: str = ""


def fail(
    service: str, message: str, log: Path | Sequence[Path] | None = None, lines: int = 40
) -> NoReturn:
    """Raise a StackError naming the service and the problem, with the tail of its log(s)."""
    text = f"[{service}] {message}"
    logs = [log] if isinstance(log, Path) else list(log or [])
    shown = [x for x in logs if x.exists() and x.stat().st_size > 0] or logs[:1]
    for path in shown:
        text += f"\n--- last lines of {path} ---\n{tail(path, lines)}"
    raise StackError(text)


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"
    return "\n".join(data.splitlines()[-lines:]) or "(empty)"


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    service: str,
    what: str,
    user: str | None = None,
    input_text: str | None = None,
    timeout: float = 120.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (as ``user`` through runuser when given); fail clearly.

    On failure the error carries the command's output and, when given, the tail of ``log``.
    """
    argv = [str(c) for c in cmd]
    if user is not None and os.geteuid() == 0 and user != pwd.getpwuid(0).pw_name:
        argv = ["runuser", "-u", user, "--", *argv]
    try:
        proc = subprocess.run(
            argv,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
            check=False,
        )
    except FileNotFoundError:
        fail(service, f"{what}: command not found: {argv[0]}")
    except subprocess.TimeoutExpired:
        fail(service, f"{what}: timed out after {timeout:.0f}s: {' '.join(argv[:4])} ...")
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
        fail(service, f"{what} failed (exit {proc.returncode}):\n" + "\n".join(out), log)
    return proc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child not yet reaped) is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode("utf-8", "replace")
        )
    except OSError:
        return ""


def read_pid(pidfile: Path, marker: str) -> int | None:
    """The pid in ``pidfile`` if that process lives and its command line contains ``marker``."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid <= 0 or not pid_alive(pid) or marker not in cmdline(pid):
        return None
    return pid


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """Whether something listens on ``host:port``.

    Reads /proc/net/tcp{,6} when it can, so the check opens no connection (ClickHouse logs
    a warning for every connection that sends nothing); else tries to connect.
    """
    listening = _listening_ports()
    if listening is not None:
        return port in listening
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_ports() -> set[int] | None:
    ports: set[int] = set()
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def wait_until(
    ready: Callable[[], bool],
    *,
    service: str,
    what: str,
    timeout: float,
    log: Path | Sequence[Path],
    alive: Callable[[], bool] | None = None,
    interval: float = 0.25,
) -> None:
    """Poll ``ready`` until true; fail with the log's tail on timeout or when the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if alive is not None and not alive():
            fail(service, f"the process exited while waiting for {what}", log)
        if time.monotonic() > deadline:
            fail(service, f"not ready after {timeout:.0f}s (waited for {what})", log)
        time.sleep(interval)


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    pidfile: Path,
    log: Path,
    cwd: Path,
    user: str | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start a long-running process in its own session, output appended to ``log``."""
    uid = gid = None
    groups: list[int] | None = None
    if user is not None and os.geteuid() == 0:  # drop root in the child itself: no runuser
        entry = pwd.getpwnam(user)
        uid, gid, groups = entry.pw_uid, entry.pw_gid, []
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, *, timeout: float = 30.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``. True when the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(50):
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
