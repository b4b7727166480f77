import uuid

import pytest

from commands.agents import (
    Actor,
    AgentNotFound,
    AgentsApplication,
    ArchiveAgent,
    CreateAgent,
    UpdateAgent,
    VersionMismatch,
)
from commands.idempotency import IdempotencyKeyReused
from domain.agent_config import AgentConfig

pytestmark = pytest.mark.unit

ALICE = Actor(space_id="space-a", subject="alice")
MALLORY = Actor(space_id="space-m", subject="mallory")


@pytest.fixture
def app():
    application = AgentsApplication(env={"PERSISTENCE_MODULE": "tests.fakes.recorder"})
    yield application
    application.close()


def create(app, name="Support", key=None, actor=ALICE):
    return app.create_agent(actor, CreateAgent(config=AgentConfig(name=name)), key)


def stored_events(app):
    return list(app.recorder.select_notifications(start=1, limit=1000))


def test_create_returns_id_version_and_position(app):
    result = create(app)
    assert result.version == 1 and result.position == 1
    assert app.get_agent(ALICE, result.id).config["name"] == "Support"


def test_replayed_idempotency_key_returns_first_result_and_writes_nothing(app):
    first = create(app, key="k1")
    again = create(app, key="k1")
    assert again.id == first.id and again.version == 1 and again.replayed
    assert len(stored_events(app)) == 1


def test_idempotency_key_reused_with_another_body_is_refused(app):
    create(app, key="k1")
    with pytest.raises(IdempotencyKeyReused):
        create(app, name="Other", key="k1")
    assert len(stored_events(app)) == 1


def test_idempotency_keys_are_scoped_to_the_space(app):
    mine = create(app, key="same")
    theirs = create(app, key="same", actor=MALLORY)
    assert mine.id != theirs.id


def test_update_with_stale_expected_version_is_refused(app):
    agent = create(app)
    app.update_agent(ALICE, UpdateAgent(agent_id=agent.id, patch={"name": "A"}, expected_version=1))
    with pytest.raises(VersionMismatch):
        app.update_agent(
            ALICE, UpdateAgent(agent_id=agent.id, patch={"name": "B"}, expected_version=1)
        )
    assert app.get_agent(ALICE, agent.id).config["name"] == "A"


def test_other_space_cannot_see_change_or_archive_an_agent(app):
    agent = create(app)
    with pytest.raises(AgentNotFound):
        app.get_agent(MALLORY, agent.id)
    with pytest.raises(AgentNotFound):
        app.update_agent(MALLORY, UpdateAgent(agent_id=agent.id, patch={"name": "x"}))
    with pytest.raises(AgentNotFound):
        app.archive_agent(MALLORY, ArchiveAgent(agent_id=agent.id))
    assert len(stored_events(app)) == 1


def test_unknown_agent_is_not_found(app):
    with pytest.raises(AgentNotFound):
        app.get_agent(ALICE, uuid.uuid4())


def test_get_agent_at_a_past_version_returns_that_config(app):
    agent = create(app)
    app.update_agent(ALICE, UpdateAgent(agent_id=agent.id, patch={"first_message": "v2"}))
    assert app.get_agent(ALICE, agent.id, version=1).config["first_message"] == ""
    assert app.get_agent(ALICE, agent.id).config["first_message"] == "v2"


def test_noop_update_saves_nothing(app):
    agent = create(app)
    result = app.update_agent(ALICE, UpdateAgent(agent_id=agent.id, patch={"name": "Support"}))
    assert result.version == 1 and len(stored_events(app)) == 1


def test_config_at_returns_the_configuration_a_call_was_created_with(app):
    actor = Actor(space_id="s1", subject="u")
    made = app.create_agent(actor, CreateAgent(config=AgentConfig(name="v1")))
    app.update_agent(actor, UpdateAgent(agent_id=made.id, patch={"name": "v2"}))
    app.archive_agent(actor, ArchiveAgent(agent_id=made.id))
    assert app.config_at(actor, made.id, 1).name == "v1"
    assert app.config_at(actor, made.id, 2).name == "v2"
    with pytest.raises(AgentNotFound):
        app.config_at(actor, made.id, 3)
    with pytest.raises(AgentNotFound):
        app.config_at(Actor(space_id="other", subject="u"), made.id, 1)
