"""The API while PostgreSQL does not answer: a clear 503 the client can retry, never a 500.

The container points at a port where nothing listens (the shared PostgreSQL is never stopped
here; ``tests/chaos`` stops a PostgreSQL of its own under load)."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient

from adapters.api.app import create_app
from adapters.api.auth import JwtVerifier
from infra.bootstrap import bootstrap

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_a_write_while_postgres_is_away_answers_503_store_unavailable(stack_settings, issuer):
    settings = stack_settings.model_copy(
        update={"postgres": stack_settings.postgres.model_copy(update={"port": _closed_port()})}
    )
    container = bootstrap(settings, verifier=JwtVerifier(issuer.auth_settings()))
    with TestClient(create_app(container), raise_server_exceptions=False) as client:
        response = client.post(
            "/api/agents",
            json={"name": "Support"},
            headers={**issuer.headers("space-away"), "Idempotency-Key": "k-1"},
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
    assert response.headers["Retry-After"] == "5"


def test_an_error_of_the_statement_itself_is_no_retry_later_503(stack_settings, issuer):
    """PostgreSQL refusing what was asked (a program limit, SQLSTATE class 54) is our fault, not
    an outage: 500 ``internal_error``, never 503 "retry"."""
    import psycopg

    def refuse() -> None:
        raise psycopg.errors.ProgramLimitExceeded("statement too complex")

    container = bootstrap(stack_settings, verifier=JwtVerifier(issuer.auth_settings()))
    app = create_app(container)
    app.add_api_route("/boom", refuse)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
