"""Our SIP endpoint for the tests: the real ``sipd`` (built by the local stack from ``sipd/``)
on ports of the test's own, and the API it asks (``/api/sip/*``) served over real HTTP by
uvicorn in a thread, since sipd is a separate process that cannot call a TestClient."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from infra.settings import Settings
from infra.stack.sipd import environment
from tests.support.baresip import free_port
from tests.support.processes import stop_group


class ApiServer:
    """``app`` served on a loopback port until ``stop``."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test API server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def sipd_env(settings: Settings, api_url: str) -> dict[str, str]:
    """The environment the stack gives sipd (``infra.stack.sipd.environment``), asking
    ``api_url`` instead of the configured API."""
    return {**environment(settings), "SIPD_API_URL": api_url}


class Sipd:
    """One sipd process with its log in ``folder``."""

    command = "sipd"

    def __init__(self, binary: Path, env: dict[str, str], folder: Path) -> None:
        self.binary = binary
        self.env = env
        self.log = folder / "sipd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def control_url(self) -> str:
        return "http://" + self.env["SIPD_CONTROL_ADDR"]

    def start(self) -> Sipd:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIPD_")}
        self.proc = subprocess.Popen(
            [str(self.binary)], env={**env, **self.env}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        out.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sipd exited: {self.tail()}")
            health = self.control_url + "/health"
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"sipd never answered /health: {self.tail()}")

    def stop(self) -> None:
        stop_group(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
