"""Shared fixtures.

Integration tests run against the real local stack (``voxagent stack up``; ``make test`` starts
it). Each test session gets its own PostgreSQL database, ClickHouse database, Kafka topic
prefix and LiveKit agent name, and binds only ephemeral ports, so a running ``make up`` platform
and earlier runs never interfere; modules that run
processes of their own (relay, projectors) take databases of their own too
(``tests.support.databases.isolated``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from infra.bootstrap import Container, bootstrap
from infra.settings import Settings

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings pointing at fresh, per-session databases and topics on the running stack."""
    from tests.support.databases import isolated

    try:
        with isolated(Settings(), f"voxagent_test_{RUN_ID}") as settings:
            # agents that name OpenAI can be saved (nothing in these tests calls it)
            keys = settings.providers.model_copy(update={"openai_api_key": SecretStr("sk-test")})
            yield settings.model_copy(update={"providers": keys})
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def container(stack_settings: Settings) -> Iterator[Container]:
    c = bootstrap(stack_settings)
    yield c
    c.close()


# the running pipeline, the issuer and API client, shared by integration and e2e tests
from tests.stack_fixtures import (  # noqa: E402, F401
    api_container,
    client,
    issuer,
    pipeline,
    pipeline_settings,
    receiver,
)
