"""What the routes answer is what the OpenAPI document says: every route, fuzzed by schemathesis
(valid and invalid inputs) against the real API on the real stack, with a real token. Each answer
must have a documented status, match that status's schema, not be a server error, and an error's
code must be one the document lists for that status."""

from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapters.api.app import create_app
from adapters.api.auth import JwtVerifier
from adapters.api.openapi import CODES_KEY
from infra.bootstrap import bootstrap
from tests.support.processes import eventually

pytestmark = pytest.mark.integration

SPACE = f"contract-{uuid.uuid4().hex[:10]}"
# CONTRACT_MAX_EXAMPLES=100 fuzzes deeper (minutes); the default keeps the test near a minute
MAX_EXAMPLES = int(os.environ.get("CONTRACT_MAX_EXAMPLES", "12"))
READ_WAIT_SECONDS = 0.3  # a fuzzed min_version waits this long, not the default 5 s


class Known:
    """Ids of real resources of SPACE, so that fuzzed requests reach more than 404s."""

    ids: dict[str, str] = {}


@pytest.fixture(scope="module")
def real_app(pipeline_settings, issuer, pipeline) -> Iterator[Any]:
    api = pipeline_settings.api.model_copy(update={"read_wait_seconds": READ_WAIT_SECONDS})
    twilio = {"twilio_auth_token": SecretStr("contract-test")}  # signatures get checked
    telephony = pipeline_settings.telephony.model_copy(update=twilio)
    container = bootstrap(
        pipeline_settings.model_copy(update={"api": api, "telephony": telephony}),
        verifier=JwtVerifier(issuer.auth_settings()),
    )
    app = create_app(container)
    _seed(app, issuer)
    try:
        yield app
    finally:
        container.close()


def _seed(app: Any, issuer: Any) -> None:
    """An agent, a session with a transcript and some usage, a webhook endpoint with a delivery."""
    from fastapi.testclient import TestClient

    headers = issuer.headers(SPACE)
    with TestClient(app) as client:

        def post(path: str, body: Any, status: int) -> dict[str, Any]:
            resp = client.post(path, json=body, headers=headers)
            assert resp.status_code == status, resp.text
            return resp.json()

        agent = post("/api/agents", {"name": "Contract"}, 201)
        session = post("/api/sessions", {"agent_id": agent["id"]}, 201)
        sid = session["id"]
        post(f"/api/sessions/{sid}/transcripts", {"speaker": "user", "text": "hi"}, 201)
        usage = {"session_id": sid, "provider": "openai", "model": "gpt-4o",
                 "kind": "llm_input_tokens", "quantity": 1000}  # fmt: skip
        post("/api/usage/events", usage, 201)
        endpoint = post("/api/webhooks", {"url": "https://hooks.example.com/in"}, 201)
        delivery = post(f"/api/webhooks/{endpoint['id']}/test", {}, 202)
        Known.ids = {
            "agent_id": agent["id"], "session_id": sid, "room_name": session["room_name"],
            "endpoint_id": endpoint["id"], "delivery_id": delivery["delivery_id"],
        }  # fmt: skip

        def projected() -> bool:
            got = client.get(f"/api/sessions/{sid}/cost-breakdown", headers=headers)
            return got.status_code == 200 and got.json()["lines"] != []

        eventually(projected, timeout=60, what="the seeded session's costs in the read model")


def error_code_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    """An error's ``error.code`` is one the document lists for that status of that route."""
    if response.status_code < 400:
        return None
    documented = case.operation.definition.raw["responses"].get(str(response.status_code), {})
    listed = documented.get(CODES_KEY)
    if listed is None:
        return None  # /health's 503 is its report; status_code_conformance covers the rest
    code = response.json()["error"]["code"]
    assert code in listed, (
        f"{case.method} {case.path} answered {response.status_code} {code!r}; the document "
        f"lists {listed} (adapters/api/openapi.py)"
    )
    return True


def no_fault(ctx: Any, response: Any, case: Any) -> bool | None:
    """Never a 500. (schemathesis' ``not_a_server_error`` counts every 5xx as a fault; our 503s
    are deliberate answers, e.g. ``read_model_behind``, and ``status_code_conformance`` checks
    that each is documented for its route.)"""
    assert response.status_code != 500, (
        f"{case.method} {case.path} answered 500: {response.text[:300]}"
    )
    return True


CHECKS = [
    no_fault,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_code_documented,
]

# the document as served (it needs no services); requests go to ``real_app``
schema = schemathesis.openapi.from_dict(create_app(SimpleNamespace(verifier=None)).openapi())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
def test_every_route_answers_as_the_openapi_document_says(case, real_app, issuer):
    if case.path_parameters:
        # half the time a real id in place of a valid one (the value decides: reproducible)
        for name, value in case.path_parameters.items():
            known = Known.ids.get(name)
            if known and _valid(name, value) and zlib.crc32(str(value).encode()) % 2 == 0:
                case.path_parameters[name] = known
    response = case.call(app=real_app, headers=issuer.headers(SPACE))
    case.validate_response(response, checks=CHECKS)


def _valid(name: str, value: Any) -> bool:
    if name == "room_name":
        return isinstance(value, str) and value != "" and "\x00" not in value
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
