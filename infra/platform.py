"""``voxagent up`` / ``down``: run the platform's processes (dev issuer, API, relay, projectors,
ingest) in the background on top of the local stack, with pid files and logs under
``.stack/run``."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from infra.settings import REPO_ROOT, Settings
from infra.stack.common import pid_alive, read_pid, spawn, stop_pid, tail

PROCESSES = (
    "dev-issuer", "api", "relay", "projector", "ingest", "webhooks-dispatch", "webhooks-send",
    "worker", "bridge",
)  # fmt: skip


def _run_dir(settings: Settings) -> Path:
    path = settings.stack.root / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _argv(name: str) -> list[str]:
    command = name.split("-") if name.startswith("webhooks-") else [name]  # webhooks send
    return [sys.executable, "-m", "infra.cli", *command]


def _running(settings: Settings, name: str) -> int | None:
    pidfile = _run_dir(settings) / f"{name}.pid"
    return read_pid(pidfile, "infra.cli") if pidfile.exists() else None


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own http URL
            return resp.status
    except Exception:  # noqa: BLE001
        return 0


def start(
    settings: Settings, echo: Callable[[str], None], names: tuple[str, ...] = PROCESSES
) -> None:
    run = _run_dir(settings)
    for name in names:
        if name == "dev-issuer" and settings.environment == "production":
            continue
        pid = _running(settings, name)
        if pid:
            echo(f"[{name}] already running (pid {pid})")
            continue
        pid = spawn(
            _argv(name), pidfile=run / f"{name}.pid", log=run / f"{name}.log", cwd=REPO_ROOT
        )
        echo(f"[{name}] started (pid {pid}, log {run / f'{name}.log'})")
    health = f"http://{settings.api.host}:{settings.api.port}/health"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _get(health) == 200:
            echo(f"[api] healthy at {health}")
            return
        pid = _running(settings, "api")
        if not pid or not pid_alive(pid):
            break
        time.sleep(0.5)
    raise RuntimeError(
        f"the API did not become healthy at {health}; its log says:\n{tail(run / 'api.log')}"
    )


def stop(settings: Settings, echo: Callable[[str], None]) -> None:
    for name in reversed(PROCESSES):
        pid = _running(settings, name)
        if pid:
            stop_pid(pid, timeout=15)
            echo(f"[{name}] stopped (pid {pid})")
        (_run_dir(settings) / f"{name}.pid").unlink(missing_ok=True)


def status(settings: Settings) -> list[tuple[str, int | None]]:
    return [(name, _running(settings, name)) for name in PROCESSES]
