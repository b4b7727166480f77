"""What ``bench/bridge.py`` runs besides itself: the bridge (a ``voxagent bridge`` child process
and its HTTP side), the LiveKit rooms (server API, no agent dispatch), and the helper
(``bench/bridge_tone.py``: the tone agent and the probes' listener), spoken to over stdio."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bridge:
    """``voxagent bridge`` as a child process, and its HTTP side."""

    def __init__(
        self, settings: Any, logs: Path, max_streams: int, tree: Path | None, name: str
    ) -> None:
        from tests.support.processes import Process, settings_env

        class Child(Process):  # run from ``tree`` (another checkout) when given
            def start(self) -> Process:
                if tree is None:
                    return super().start()
                with open(self.log, "ab") as out:
                    self.proc = subprocess.Popen(
                        [sys.executable, "-m", "infra.cli", "bridge"], cwd=tree,
                        env={**settings_env(self.settings), **self.extra_env}, stdout=out,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )  # fmt: skip
                return self

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"ws://127.0.0.1:{self.port}/streams/twilio"
        env = {"VOXAGENT_TELEPHONY__BRIDGE_PORT": str(self.port),
               "VOXAGENT_TELEPHONY__MAX_STREAMS": str(max_streams)}  # fmt: skip
        self.process = Child("bridge", settings, logs, env=env)
        self.process.log = logs / f"{name}.log"
        self.http: Any = None

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    async def start(self) -> None:
        import aiohttp

        self.process.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.http.get(self.base + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if not self.process.alive() or time.monotonic() > deadline:
                raise SystemExit(f"the bridge did not start:\n{self.process.tail()}")
            await asyncio.sleep(0.2)

    def log_size(self) -> int:
        return self.process.log.stat().st_size if self.process.log.exists() else 0

    def warnings_since(self, offset: int) -> dict[str, Any]:
        """WARNING and ERROR lines the bridge logged since ``offset``: how many, and the most
        frequent (digits blanked, so that one kind of message counts as one)."""
        kinds: Counter[str] = Counter()
        with open(self.process.log, "rb") as f:
            f.seek(offset)
            for raw in f:
                if b" WARNING " in raw or b" ERROR " in raw:
                    line = raw.decode(errors="replace").rstrip()
                    kinds[re.sub(r"\d+", "N", line.split(" ", 3)[-1])[:160]] += 1
        return {"count": sum(kinds.values()), "top": kinds.most_common(3)}

    async def stats(self, attempts: int = 3) -> dict[str, Any]:
        """``/stats``; a bridge too busy to answer in 20 s, ``attempts`` times, raises."""
        for attempt in range(attempts):
            try:
                async with self.http.get(self.base + "/stats") as r:
                    return await r.json()
            except (TimeoutError, OSError):
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    async def reset(self) -> None:
        async with self.http.post(self.base + "/stats/reset") as r:
            r.raise_for_status()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        self.process.stop()


class Rooms:
    """The benchmark's LiveKit rooms, created with the server API (no agent dispatch)."""

    def __init__(self, settings: Any, prefix: str) -> None:
        from adapters.livekit.rooms import http_url

        lk = settings.livekit
        self.args = (http_url(lk.url), lk.api_key, lk.api_secret.get_secret_value())
        self.prefix, self.names = prefix, []

    async def create(self, count: int) -> list[str]:
        from livekit import api

        names = [f"{self.prefix}-{len(self.names) + i}" for i in range(count)]
        semaphore = asyncio.Semaphore(16)
        async with api.LiveKitAPI(*self.args) as lk:

            async def one(name: str) -> None:
                async with semaphore:
                    await lk.room.create_room(api.CreateRoomRequest(
                        name=name, empty_timeout=300, departure_timeout=20))  # fmt: skip

            await asyncio.gather(*(one(n) for n in names))
        self.names += names
        return names

    async def delete_all(self) -> None:
        from livekit import api

        semaphore = asyncio.Semaphore(16)
        async with api.LiveKitAPI(*self.args) as lk:

            async def one(name: str) -> None:
                async with semaphore:
                    await lk.room.delete_room(api.DeleteRoomRequest(room=name))

            await asyncio.gather(*(one(n) for n in self.names), return_exceptions=True)
        self.names = []


class Helper:
    """``bench/bridge_tone.py`` as a child process (the tone agent and the probes' observer),
    spoken to over stdin/stdout."""

    def __init__(self, logs: Path, frame_ms: int) -> None:
        self.log = logs / "tone.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("bridge_tone.py")), str(frame_ms)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True,
            )  # fmt: skip

    async def ask(self, command: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        def exchange() -> str:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
            return self.proc.stdout.readline()

        line = await asyncio.wait_for(asyncio.to_thread(exchange), timeout)
        if not line:
            raise RuntimeError(f"the helper process exited:\n{self.log.read_text()[-2000:]}")
        return json.loads(line)

    async def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                await self.ask({"leave": True}, timeout=60)
                self.proc.wait(timeout=20)
            except (TimeoutError, RuntimeError, subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
