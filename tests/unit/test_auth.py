"""Bearer-token authentication of /api, and the development issuer behind `voxagent token`."""

from __future__ import annotations

import logging
import stat
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jwt.utils import base64url_decode

from adapters.api.auth import CallerDep, JwtVerifier
from adapters.api.errors import install_error_handlers
from infra import devauth
from infra.devauth_cli import token_command
from infra.settings import AuthSettings, Settings
from tests.support.jwt import JwksServer, bearer, forge_token

pytestmark = pytest.mark.unit


def make_client(settings: AuthSettings, clock: Callable[[], float] | None = None) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.state.verifier = JwtVerifier(settings, clock=clock) if clock else JwtVerifier(settings)

    @app.get("/api/whoami")
    async def whoami(caller: CallerDep) -> dict[str, Any]:
        return {
            "space_id": caller.space_id,
            "subject": caller.subject,
            "scopes": sorted(caller.scopes),
        }

    return TestClient(app)


@pytest.fixture
def issuer() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
def client(issuer: JwksServer) -> TestClient:
    return make_client(issuer.auth_settings())


def whoami(client: TestClient, token: str) -> httpx.Response:
    response: httpx.Response = client.get("/api/whoami", headers=bearer(token))
    return response


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["request_id"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return error


def test_valid_token_names_the_callers_space(issuer: JwksServer, client: TestClient) -> None:
    response = whoami(client, issuer.mint("space-1", "user-7", scopes=("calls:write",)))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "space_id": "space-1",
        "subject": "user-7",
        "scopes": ["calls:write"],
    }


def test_scopes_come_from_scope_and_scp(issuer: JwksServer, client: TestClient) -> None:
    token = issuer.mint("space-1", scope="a b", scp=["c", "b"])
    assert whoami(client, token).json()["scopes"] == ["a", "b", "c"]


def test_request_without_authorization_is_unauthenticated(client: TestClient) -> None:
    response = client.get("/api/whoami")
    assert_error(response, 401, "unauthenticated")
    assert "error=" not in response.headers["www-authenticate"]  # RFC 6750 §3.1


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "token"])
def test_authorization_that_is_not_bearer_is_unauthenticated(
    client: TestClient, authorization: str
) -> None:
    response = client.get("/api/whoami", headers={"Authorization": authorization})
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_malformed_token_is_unauthenticated(client: TestClient) -> None:
    assert_error(whoami(client, "not-a-jwt"), 401, "unauthenticated")


def test_expired_token_is_unauthenticated(issuer: JwksServer, client: TestClient) -> None:
    error = assert_error(whoami(client, issuer.mint_expired("space-1")), 401, "unauthenticated")
    assert "expired" in error["message"]


def test_token_for_another_audience_is_unauthenticated(
    issuer: JwksServer, client: TestClient
) -> None:
    error = assert_error(
        whoami(client, issuer.mint("space-1", aud="other-api")), 401, "unauthenticated"
    )
    assert "voxagent-api" in error["message"]


def test_token_from_another_issuer_is_unauthenticated(
    issuer: JwksServer, client: TestClient
) -> None:
    token = issuer.mint("space-1", iss="https://evil.example/realms/x")
    assert_error(whoami(client, token), 401, "unauthenticated")


def test_token_signed_by_an_unknown_key_is_unauthenticated(
    issuer: JwksServer, client: TestClient
) -> None:
    error = assert_error(whoami(client, issuer.mint_unknown_key("space-1")), 401, "unauthenticated")
    assert "kid" in error["message"]


def test_token_with_a_known_kid_but_a_foreign_signature_is_unauthenticated(
    issuer: JwksServer, client: TestClient
) -> None:
    token = issuer.mint("space-1", key=issuer.stranger_key, kid=issuer.kid)
    error = assert_error(whoami(client, token), 401, "unauthenticated")
    assert "signature" in error["message"]


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_forged_token_is_unauthenticated(issuer: JwksServer, client: TestClient, alg: str) -> None:
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = forge_token(issuer.claims("space-1"), alg=alg, secret=public_pem, kid=issuer.kid)
    assert_error(whoami(client, token), 401, "unauthenticated")


def test_token_without_subject_is_unauthenticated(issuer: JwksServer, client: TestClient) -> None:
    assert_error(whoami(client, issuer.mint("space-1", subject=None)), 401, "unauthenticated")


@pytest.mark.parametrize("space", [None, "", "../etc", "a b", "x" * 129, 42, ["space-1"]])
def test_token_without_a_valid_space_is_forbidden(
    issuer: JwksServer, client: TestClient, space: Any
) -> None:
    token = issuer.mint(None) if space is None else issuer.mint("unused", space_id=space)
    error = assert_error(whoami(client, token), 403, "space_missing")
    assert "space_id" in error["message"]


def test_space_claim_name_comes_from_settings(issuer: JwksServer) -> None:
    client = make_client(issuer.auth_settings(space_claim="tenant"))
    assert whoami(client, issuer.mint(None, tenant="acme")).json()["space_id"] == "acme"


def test_unreachable_jwks_is_auth_unavailable(issuer: JwksServer, client: TestClient) -> None:
    issuer.close()
    response = whoami(client, JwksServer().mint("space-1"))
    assert_error(response, 503, "auth_unavailable")
    assert response.headers["retry-after"]


@pytest.mark.parametrize("jwks", [{"keys": []}, {"keys": [{"kty": "RSA"}]}, {"no": "keys"}])
def test_jwks_without_usable_keys_is_auth_unavailable(
    issuer: JwksServer, client: TestClient, jwks: dict[str, Any]
) -> None:
    issuer.jwks = jwks
    assert_error(whoami(client, issuer.mint("space-1")), 503, "auth_unavailable")


def test_an_issuer_outage_is_not_hammered_and_recovery_is_noticed(issuer: JwksServer) -> None:
    now = [1000.0]
    client = make_client(issuer.auth_settings(), clock=lambda: now[0])
    issuer.failing = True
    for _ in range(3):
        assert_error(whoami(client, issuer.mint("space-1")), 503, "auth_unavailable")
    assert issuer.jwks_requests == 1
    issuer.failing = False
    now[0] += 5
    assert whoami(client, issuer.mint("space-1")).status_code == 200


def test_jwks_is_fetched_once_for_many_requests(issuer: JwksServer, client: TestClient) -> None:
    for i in range(20):
        assert whoami(client, issuer.mint(f"space-{i}")).status_code == 200
    assert issuer.jwks_requests == 1


def test_a_rotated_key_is_fetched_when_a_token_names_it(
    issuer: JwksServer, client: TestClient
) -> None:
    assert whoami(client, issuer.mint("space-1")).status_code == 200
    new_key = issuer.add_key()
    assert whoami(client, issuer.mint("space-1", key=new_key)).status_code == 200
    assert issuer.jwks_requests == 2


def test_unknown_kids_refetch_the_jwks_at_most_once_per_cooldown(
    issuer: JwksServer, client: TestClient
) -> None:
    for _ in range(5):
        assert_error(whoami(client, issuer.mint_unknown_key("space-1")), 401, "unauthenticated")
    assert issuer.jwks_requests == 2  # the first fetch, then one refetch


def test_tokens_are_never_logged(
    issuer: JwksServer, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [issuer.mint("space-1"), issuer.mint_expired("space-1"), issuer.mint("../x")]
    for token in tokens:
        whoami(client, token)
    issuer.close()
    whoami(make_client(issuer.auth_settings()), tokens[0])
    assert caplog.records
    assert not any(token.split(".")[2] in caplog.text for token in tokens)


# The development issuer.


def test_dev_key_is_created_private_once_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "nested" / "dev-key.pem"
    key = devauth.ensure_dev_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert devauth.key_id(devauth.ensure_dev_key(path)) == devauth.key_id(key)
    assert list(path.parent.iterdir()) == [path]


def test_kid_is_the_rfc7638_thumbprint() -> None:
    n = (  # the example key of RFC 7638 §3.1
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
        "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    public = rsa.RSAPublicNumbers(65537, int.from_bytes(base64url_decode(n), "big")).public_key()
    assert devauth.key_id(public) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_cli_token_verifies_against_the_dev_issuer(tmp_path: Path) -> None:
    base = Settings(
        environment="development",
        auth=AuthSettings(
            dev_signing_key=tmp_path / "dev-key.pem",
            jwks_url="http://127.0.0.1:1/keys/jwks.json",
        ),
    )
    server = devauth.build_dev_issuer(base, port=0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        auth = base.auth.model_copy(update={"jwks_url": server.jwks_url})
        assert server.jwks_url.endswith("/keys/jwks.json")
        config_url = server.jwks_url.replace(
            "/keys/jwks.json", "/realms/voxagent/.well-known/openid-configuration"
        )
        with urllib.request.urlopen(config_url) as response:
            assert b'"issuer": "http://127.0.0.1:58080/realms/voxagent"' in response.read()
        result = CliRunner().invoke(token_command, ["--space", "space-9", "--ttl", "60"], obj=base)
        assert result.exit_code == 0, result.output
        response = whoami(make_client(auth), result.output.strip())
        assert response.json() == {"space_id": "space-9", "subject": "dev-user", "scopes": []}
    finally:
        server.shutdown()
        server.server_close()


def test_dev_issuer_refuses_production(tmp_path: Path) -> None:
    settings = Settings(
        environment="production", auth=AuthSettings(dev_signing_key=tmp_path / "k.pem")
    )
    with pytest.raises(devauth.DevAuthRefused):
        devauth.serve_dev_issuer(settings)
    result = CliRunner().invoke(token_command, ["--space", "s"], obj=settings)
    assert result.exit_code == 2 and "production" in result.output
    assert not (tmp_path / "k.pem").exists()
