"""Run platform processes (``voxagent relay``, ``voxagent projector``...) as real subprocesses
configured for the test session, so tests can kill -9 and restart them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from infra.settings import REPO_ROOT, Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The VOXAGENT_* variables that make a child process build these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXAGENT_")}
    env.update(
        VOXAGENT_ENVIRONMENT=settings.environment,
        VOXAGENT_POSTGRES__DATABASE=settings.postgres.database,
        VOXAGENT_CLICKHOUSE__DATABASE=settings.clickhouse.database,
        VOXAGENT_TOPIC_PREFIX=settings.topic_prefix,
        VOXAGENT_POSTGRES__APPLICATION_NAME=settings.postgres.application_name,
        VOXAGENT_LIVEKIT__AGENT_NAME=settings.livekit.agent_name,
        VOXAGENT_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


def stop_group(proc: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
    """SIGTERM a child started with ``start_new_session`` and its group; SIGKILL after
    ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class Process:
    """One ``python -m infra.cli <command>`` child (``"webhooks send"`` names a subcommand) with
    its output in a log file; ``env`` adds variables (settings the ``Settings`` object does not
    carry to a child, e.g. ``VOXAGENT_WEBHOOKS__RETRY_SCHEDULE``)."""

    def __init__(
        self, command: str, settings: Settings, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.settings = settings
        self.extra_env = env or {}
        self.log = log_dir / f"{command.replace(' ', '-')}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", *self.command.split()],
            cwd=REPO_ROOT,
            env={**settings_env(self.settings), **self.extra_env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_group(self.proc, grace=20)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def eventually(
    check: Callable[[], object],
    *,
    timeout: float = 60.0,
    interval: float = 0.1,
    what: str = "condition",
    processes: tuple[Process, ...] = (),
) -> object:
    """Poll ``check`` until it returns something truthy; fail with the processes' logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for p in processes:
            if not p.alive():
                raise AssertionError(f"{p.command} exited while waiting for {what}:\n{p.tail()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.command} ---\n{p.tail()}" for p in processes)
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")
        time.sleep(interval)
