"""Fixtures of integration and e2e tests: the running pipeline, the issuer, an authenticated API
client, a webhook receiver (registered by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.api.app import create_app
from adapters.api.auth import JwtVerifier
from adapters.kafka.topics import domain_topics, ensure_topics
from commands.agents import Actor, CreateAgent
from domain.agent_config import AgentConfig
from infra.bootstrap import Container, bootstrap
from infra.settings import Settings
from projections import agent_queries
from tests.support.databases import isolated
from tests.support.jwt import JwksServer
from tests.support.processes import Process, eventually
from tests.support.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local webhook receiver (tests.support.receiver); every held request is let go."""
    rec = Receiver().start()
    yield rec
    rec.release.set()
    rec.stop()


@pytest.fixture(scope="session")
def issuer() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture(scope="session")
def pipeline_settings(stack_settings: Settings) -> Iterator[Settings]:
    """Databases and topics of the pipeline's own: its relay owns their event store."""
    with isolated(stack_settings, f"{stack_settings.postgres.database}_pipe") as settings:
        yield settings


@pytest.fixture(scope="session")
def pipeline(
    pipeline_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """The real relay, Faust projectors and ingest as subprocesses, for the whole session."""
    stack_settings = pipeline_settings
    ensure_topics(stack_settings, domain_topics(stack_settings))
    logs = tmp_path_factory.mktemp("pipeline")
    procs = {
        name: Process(name, stack_settings, Path(logs)).start()
        for name in ("relay", "projector", "ingest")
    }
    try:
        _wait_until_flowing(stack_settings, tuple(procs.values()))
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def _wait_until_flowing(settings: Settings, procs: tuple[Process, ...]) -> None:
    """A canary agent goes through the whole path: the projector has joined its group."""
    container = bootstrap(settings)
    try:
        actor = Actor(space_id="canary", subject="pipeline-fixture")
        result = container.agents.create_agent(
            actor, CreateAgent(config=AgentConfig(name="canary"))
        )

        def projected() -> bool:
            with container.pool.connection() as conn:
                return agent_queries.get_agent(conn, "canary", result.id) is not None

        eventually(
            projected, timeout=120, what="the canary agent in the read model", processes=procs
        )
    finally:
        container.close()


@pytest.fixture(scope="session")
def api_container(pipeline_settings: Settings, issuer: JwksServer) -> Iterator[Container]:
    container = bootstrap(pipeline_settings, verifier=JwtVerifier(issuer.auth_settings()))
    yield container
    container.close()


@pytest.fixture
def client(api_container: Container, pipeline: dict) -> Iterator[TestClient]:
    with TestClient(create_app(api_container)) as test_client:
        yield test_client
