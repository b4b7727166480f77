import pytest

from domain.agent_config import AgentConfig
from domain.agents import VoiceAgent
from domain.errors import AgentArchived, InvalidConfig

pytestmark = pytest.mark.unit

TOOL = {
    "name": "lookup_order",
    "description": "Find an order",
    "url": "https://api.example.com/o",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
}


def new_agent(**config):
    return VoiceAgent.create("space-a", AgentConfig(name="Support", **config), "user-1")


def test_created_agent_starts_at_config_version_one_in_its_space():
    agent = new_agent()
    assert agent.space_id == "space-a"
    assert agent.config_version == 1 and agent.version == 1
    assert agent.config["name"] == "Support"


def test_update_merges_nested_fields_and_bumps_config_version():
    agent = new_agent()
    assert agent.update({"llm": {"temperature": 0.2}, "first_message": "Hi!"}, "user-1")
    assert agent.config_version == 2
    assert agent.config["llm"] == {
        **AgentConfig(name="x").llm.model_dump(mode="json"),
        "temperature": 0.2,
    }
    assert agent.config["first_message"] == "Hi!"
    event = agent.collect_events()[-1]
    assert event.changed == ["first_message", "llm"]
    assert event.config == agent.config


def test_update_that_changes_nothing_records_no_event():
    agent = new_agent(first_message="Hi")
    agent.collect_events()
    assert agent.update({"first_message": "Hi"}, "user-1") is False
    assert agent.collect_events() == []
    assert agent.config_version == 1


def test_null_in_a_patch_restores_the_default():
    agent = new_agent(description="old")
    agent.update({"description": None}, "user-1")
    assert agent.config["description"] == ""


def test_invalid_patch_is_refused_and_changes_nothing():
    agent = new_agent()
    with pytest.raises(InvalidConfig, match="llm.temperature"):
        agent.update({"llm": {"temperature": 9}}, "user-1")
    assert agent.config_version == 1 and agent.version == 1


def test_tool_names_must_be_unique():
    with pytest.raises(ValueError, match="repeated: lookup_order"):
        AgentConfig(name="x", tools=[TOOL, TOOL])


def test_tool_url_must_be_absolute_http():
    with pytest.raises(ValueError, match="absolute http"):
        AgentConfig(name="x", tools=[{**TOOL, "url": "ftp://example.com"}])


def test_archived_agent_rejects_updates_and_new_calls():
    agent = new_agent()
    agent.archive("user-1")
    assert agent.archived
    with pytest.raises(AgentArchived):
        agent.update({"name": "New"}, "user-1")
    with pytest.raises(AgentArchived):
        agent.ensure_accepts_calls()
    with pytest.raises(AgentArchived):
        agent.archive("user-1")


def test_agent_rebuilds_from_its_events():
    agent = new_agent(tools=[TOOL])
    agent.update({"name": "Sales"}, "user-1")
    agent.archive("user-1")
    events = agent.collect_events()
    copy = None
    for event in events:
        copy = event.mutate(copy)
    assert copy.config == agent.config and copy.archived and copy.version == 3
