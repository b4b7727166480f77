"""Fixtures of the end-to-end tests: the real voice worker on the real LiveKit server, next to
the pipeline of the integration tests (relay, projectors, ingest)."""

from __future__ import annotations

import json
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
