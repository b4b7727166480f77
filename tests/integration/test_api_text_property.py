"""Property: whatever Unicode an operator sends in an agent's text fields, the API either
accepts it (201/200) and the read model — fed through the relay, Kafka and the projector —
returns exactly what was sent, or refuses it (422 ``invalid_request``) and stores nothing. It
refuses exactly the text PostgreSQL or UTF-8 cannot hold (NUL, lone surrogates)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration import test_api_text as base
from tests.integration.test_api_text import positions, send, space

pytestmark = pytest.mark.integration
api = base.api  # the fixture: the client with its issuer and container

ANY_CHAR = st.characters(codec=None, categories=None, exclude_categories=())
SPECIAL = st.sampled_from(["\x00", "\ud800", "\udc00", "\ufffd", "\uffff", "\U0010ffff", "\t",
                           " ", "\x7f", "\x85", "\u2028", "\U0001f600", "\\", '"'])  # fmt: skip
TEXT = st.text(alphabet=st.one_of(ANY_CHAR, SPECIAL), max_size=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "description": TEXT, "system_prompt": TEXT, "first_message": TEXT, "silence_prompt": TEXT,
    "variables": st.dictionaries(TEXT.filter(bool), TEXT, max_size=3),
})  # fmt: skip


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    return []


def storable(body: dict[str, Any]) -> bool:
    """The oracle, independent of domain.text: UTF-8 can encode it and it holds no NUL."""
    for text in strings(body):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
        if "\x00" in text:
            return False
    return True


def read(api: Any, sp: str, agent_id: str, version: int) -> dict[str, Any]:
    resp = send(api, "GET", f"/api/agents/{agent_id}", sp, params={"min_version": version})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def refused(api: Any, resp: Any, before: tuple[Any, ...]) -> None:
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"
    assert positions(api.container) == before


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=TEXT, created=FIELDS, patch=FIELDS)  # fmt: skip
def test_any_unicode_is_stored_exactly_or_refused_with_nothing_stored(api, name, created, patch):
    sp = space()
    body = {"name": "n" + name, **created}
    before = positions(api.container)
    resp = send(api, "POST", "/api/agents", sp, body)
    if not storable(body):
        refused(api, resp, before)
        assert send(api, "GET", "/api/agents", sp).json()["total"] == 0
        resp = send(api, "POST", "/api/agents", sp, {"name": "plain"})
        body = {"name": "plain"}
    assert resp.status_code == 201, resp.text
    agent_id = resp.json()["id"]
    got = read(api, sp, agent_id, 1)
    assert got["name"] == body["name"].strip()  # names are stripped (documented)
    assert {k: got[k] for k in created if k in body} == {k: body[k] for k in created if k in body}

    before = positions(api.container)
    resp = send(api, "PATCH", f"/api/agents/{agent_id}", sp, patch)
    if not storable(patch):
        refused(api, resp, before)
        assert read(api, sp, agent_id, 1)["version"] == got["version"]
        return
    assert resp.status_code == 200, resp.text
    after = read(api, sp, agent_id, resp.json()["version"])
    for key, value in patch.items():
        expected = {**got["variables"], **value} if key == "variables" else value
        assert after[key] == expected
