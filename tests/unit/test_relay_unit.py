"""The relay's pure parts: notifications -> Kafka messages, producer settings, topic names."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from eventsourcing.persistence import Notification

from adapters.kafka.producer import producer_config
from adapters.kafka.relay import UndecodableNotification, encode
from adapters.kafka.topics import domain_topics
from commands.agents import Actor, AgentsApplication, CreateAgent, UpdateAgent
from domain.agent_config import AgentConfig
from domain.contract import event_id
from infra.settings import Settings

pytestmark = pytest.mark.unit

ACTOR = Actor(space_id="space-a", subject="user-1")
SUPPORT = AgentConfig(name="Support", language="en")


@pytest.fixture
def app() -> Iterator[AgentsApplication]:
    application = AgentsApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield application
    application.close()


def test_each_notification_becomes_compact_json_keyed_by_its_aggregate(
    app: AgentsApplication,
) -> None:
    created = app.create_agent(ACTOR, CreateAgent(config=SUPPORT))
    app.update_agent(ACTOR, UpdateAgent(agent_id=created.id, patch={"first_message": "Hé"}))
    notifications = app.recorder.select_notifications(start=None, limit=10)

    messages, undecodable = encode(app, notifications, "pfx")

    assert undecodable is None
    assert [m.topic for m in messages] == ["pfx.agents.v1", "pfx.agents.v1"]
    assert {m.key for m in messages} == {str(created.id).encode()}
    assert [m.position for m in messages] == [n.id for n in notifications]
    first, second = (json.loads(m.value) for m in messages)
    assert first["event_id"] == event_id(created.id, 1)
    assert (first["type"], second["type"]) == ("agent.created", "agent.updated")
    assert second["data"]["config"]["first_message"] == "Hé"
    compact = json.dumps(second, separators=(",", ":"), ensure_ascii=False).encode()
    assert messages[1].value == compact  # compact, UTF-8 ("Hé", not "H\\u00e9")


def test_encoding_stops_at_an_undecodable_notification_and_names_it(
    app: AgentsApplication,
) -> None:
    created = app.create_agent(ACTOR, CreateAgent(config=SUPPORT))
    good = app.recorder.select_notifications(start=None, limit=10)
    bad = Notification(
        originator_id=created.id, originator_version=2, topic="agent.updated",
        state=b"{not json", id=good[-1].id + 1,
    )  # fmt: skip
    after = Notification(
        originator_id=good[0].originator_id, originator_version=3, topic=good[0].topic,
        state=good[0].state, id=bad.id + 1,
    )  # fmt: skip

    messages, undecodable = encode(app, [*good, bad, after], "pfx")

    assert [m.position for m in messages] == [good[0].id]
    assert isinstance(undecodable, UndecodableNotification)
    assert undecodable.notification_id == bad.id
    assert f"notification {bad.id}" in str(undecodable)


def test_producer_is_idempotent_waits_for_all_replicas_and_batches_from_settings() -> None:
    settings = Settings()
    config = producer_config(settings, **{"message.timeout.ms": 1500})
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["linger.ms"] == settings.kafka.linger_ms
    assert config["compression.type"] == settings.kafka.compression
    assert config["bootstrap.servers"] == settings.kafka.bootstrap
    assert config["message.timeout.ms"] == 1500


def test_domain_topics_are_the_context_and_ingress_topics_with_their_dead_letters() -> None:
    settings = Settings().model_copy(update={"topic_prefix": "acme"})
    assert domain_topics(settings) == [
        "acme.agents.v1",
        "acme.agents.v1.dlq",
        "acme.calls.v1",
        "acme.calls.v1.dlq",
        "acme.webhooks.v1",
        "acme.webhooks.v1.dlq",
        "acme.numbers.v1",
        "acme.numbers.v1.dlq",
        "acme.billing.v1",
        "acme.billing.v1.dlq",
        "acme.ingress.worker.v1",
        "acme.ingress.worker.v1.dlq",
        "acme.ingress.provider.v1",
        "acme.ingress.provider.v1.dlq",
    ]
    assert domain_topics(settings, ["agent"]) == ["acme.agents.v1", "acme.agents.v1.dlq"]
