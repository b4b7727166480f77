"""The OpenAPI document states every route's statuses, its error body and its codes, and
docs/api.md says the same. What the routes really answer is compared with it in
tests/integration/test_api_contract.py."""

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from adapters.api import api_doc
from adapters.api.app import _MAPPED, create_app
from adapters.api.openapi import CODES, CODES_KEY, api_routes, route_codes
from adapters.livekit.webhooks import InvalidWebhook

pytestmark = pytest.mark.unit

API = Path(__file__).resolve().parents[2] / "adapters" / "api"


@pytest.fixture(scope="module")
def app():
    return create_app(SimpleNamespace(verifier=None))


@pytest.fixture(scope="module")
def spec(app):
    return app.openapi()


def operations(spec):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield f"{method.upper()} {path}", op


def test_every_route_documents_its_error_statuses_with_our_error_body(app, spec):
    documented = dict(operations(spec))
    for route in api_routes(app):
        for method in route.methods:
            name = f"{method} {route.path_format}"
            responses = documented[name]["responses"]
            errors = {s: r for s, r in responses.items() if not s.startswith("2")}
            assert {"422", "500"} <= set(errors), name
            for status, expected in route_codes(route).items():
                if name == "GET /health" and status == 503:
                    continue
                response = errors[str(status)]
                assert response[CODES_KEY] == expected, name
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (name, status)


def test_fastapis_own_validation_error_body_is_documented_nowhere(spec):
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "HTTPValidationError" not in str(spec["paths"])


def test_every_route_documents_a_schema_for_what_it_answers(spec):
    for name, op in operations(spec):
        ok = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert ok, name
        for status, response in ok.items():
            if status == "204":
                assert "content" not in response, name
                continue
            schemas = [body.get("schema") for body in response.get("content", {}).values()]
            assert schemas and all(schemas), f"{name} {status} has no response schema"


def test_routes_that_take_a_token_say_so(spec):
    for name, op in operations(spec):
        takes_token = "401" in op["responses"] and "unauthenticated" in op["responses"]["401"].get(
            CODES_KEY, []
        )
        assert (op.get("security") == [{"bearer": []}]) == takes_token, name


def test_every_mapped_exception_answers_a_documented_code_with_its_status():
    for exc_type, (status, code) in _MAPPED.items():
        assert CODES.get(code, (None,))[0] == status, f"{exc_type.__name__}: {code}"
    assert CODES[InvalidWebhook.code][0] == 401


def _raised_codes():
    """Every ``ApiError(status, "code", ...)`` written in adapters/api."""
    for path in API.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "ApiError"
                and len(node.args) >= 2
                and all(isinstance(a, ast.Constant) for a in node.args[:2])
            ):
                yield path.name, node.args[0].value, node.args[1].value


def test_every_code_the_routes_raise_is_documented_with_its_status():
    raised = list(_raised_codes())
    assert len(raised) > 15
    wrong = [
        f"{file}: {status} {code}"
        for file, status, code in raised
        if CODES.get(code, (None,))[0] != status
    ]
    assert wrong == [], "add these to adapters/api/openapi.py CODES"


def test_api_doc_lists_every_route_and_code_as_the_spec_states_them():
    doc = api_doc.DOC.read_text()
    assert api_doc.render(doc) == doc, "docs/api.md is stale: run python -m adapters.api.api_doc"
