"""Fixtures of the end-to-end tests: the real voice worker on the real LiveKit server, next to
the pipeline of the integration tests (relay, projectors, ingest)."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from adapters.api.app import create_app
from adapters.api.auth import JwtVerifier
from infra.bootstrap import Container, bootstrap
from infra.settings import Settings
from infra.stack import sipd as sipd_stack
from tests.support.baresip import free_port
from tests.support.jwt import JwksServer
from tests.support.processes import Process, eventually
from tests.support.sip_platform import ApiServer, Sipd, sipd_env


@dataclass(frozen=True)
class SipPorts:
    sip: int
    control: int


@pytest.fixture(scope="session")
def sip_ports() -> SipPorts:
    """The test sipd's ports: the ``sip`` fixture runs it there, and the worker's
    ``transfer_call`` tool asks its control API (not the local stack's sipd)."""
    return SipPorts(free_port(), free_port())


@pytest.fixture(scope="session")
def worker(
    pipeline: dict, pipeline_settings: Settings, sip_ports: SipPorts,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Process]:  # fmt: skip
    """``voxagent worker`` registered with the local LiveKit server; tools may reach
    loopback services (the test's order service); SIP transfers go to the test's sipd."""
    env = {"VOXAGENT_WORKER__CALLBACK_ALLOWED_NETWORKS": json.dumps(["127.0.0.1/32"]),
           "VOXAGENT_TELEPHONY__SIPD_CONTROL_PORT": str(sip_ports.control)}  # fmt: skip
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


@dataclass
class SipEndpoint:
    """Our SIP endpoint as a carrier sees it: ``address`` (host:port) takes INVITEs; ``http``
    is the API sipd asks (the test's container, served over HTTP)."""

    address: str
    sipd: Sipd
    api: ApiServer
    http: httpx.Client
    container: Container


@pytest.fixture(scope="session")
def sip(
    pipeline_settings: Settings, issuer: JwksServer, bridge: str, pipeline: dict,
    sip_ports: SipPorts, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SipEndpoint]:  # fmt: skip
    """The real sipd on ports of its own, asking an API whose streams go to the test bridge."""
    telephony = pipeline_settings.telephony.model_copy(update={
        "bridge_public_url": bridge, "sip_port": sip_ports.sip,
        "sipd_control_port": sip_ports.control,
    })  # fmt: skip
    settings = pipeline_settings.model_copy(update={"telephony": telephony})
    container = bootstrap(settings, verifier=JwtVerifier(issuer.auth_settings()))
    api = ApiServer(create_app(container)).start()
    folder = Path(tmp_path_factory.mktemp("sipd"))
    proc = Sipd(sipd_stack.build(settings, print), sipd_env(settings, api.url), folder)
    try:
        proc.start()
        with httpx.Client(base_url=api.url, timeout=30) as http:
            yield SipEndpoint(f"127.0.0.1:{telephony.sip_port}", proc, api, http, container)
    finally:
        proc.stop()
        api.stop()
        container.close()
