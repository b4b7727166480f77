"""Fixtures of the end-to-end tests: the real voice worker on the real LiveKit server, next to
the pipeline of the integration tests (relay, projectors, ingest)."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.settings import Settings
from tests.support.processes import Process, eventually


@pytest.fixture(scope="session")
def worker(
    pipeline: dict, pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """``voxagent worker`` registered with the local LiveKit server; tools may reach
    loopback services (the test's order service)."""
    env = {"VOXAGENT_WORKER__CALLBACK_ALLOWED_NETWORKS": json.dumps(["127.0.0.1/32"])}
    proc = Process("worker", pipeline_settings, Path(tmp_path_factory.mktemp("worker")), env=env)
    proc.start()
    try:
        eventually(lambda: "registered worker" in proc.tail(400), timeout=120,
                   what="the worker registered with LiveKit", processes=(proc,))  # fmt: skip
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def bridge(pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``voxagent bridge`` on a free port; yields its ws:// base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"VOXAGENT_TELEPHONY__BRIDGE_PORT": str(port)}
    proc = Process("bridge", pipeline_settings, Path(tmp_path_factory.mktemp("bridge")), env=env)
    proc.start()
    try:
        eventually(lambda: _healthy(f"http://127.0.0.1:{port}/health"), timeout=60,
                   what="the media bridge answering", processes=(proc,))  # fmt: skip
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except OSError:
        return False
