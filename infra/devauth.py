"""A development token issuer, so the API runs with no Keycloak.

It keeps one RSA key on disk (``settings.auth.dev_signing_key``), mints RS256 tokens with it
(``voxagent token``) and serves its public key at ``settings.auth.jwks_url``
(``voxagent dev-issuer``), where :class:`adapters.api.auth.JwtVerifier` finds it exactly as it
would find Keycloak's. It refuses to run when ``environment`` is ``production``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.utils import base64url_encode, to_base64url_uint

from infra.settings import Settings

log = logging.getLogger(__name__)


class DevAuthRefused(RuntimeError):
    """The development issuer must not run here (``environment`` is ``production``)."""


def refuse_in_production(settings: Settings) -> None:
    if settings.environment == "production":
        raise DevAuthRefused(
            "The development issuer is disabled in production: configure "
            "VOXAGENT_AUTH__JWKS_URL and VOXAGENT_AUTH__ISSUER to point at your OIDC issuer."
        )


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ensure_dev_key(path: Path | str) -> rsa.RSAPrivateKey:
    """Load the RSA key at ``path``, creating it (mode 0600) first if it is missing."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = generate_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".dev-key-")  # created 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # atomic and never overwrites: a concurrent creator wins
        finally:
            os.unlink(tmp)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{path} does not hold an RSA private key; delete it to get a new one.")
    return key


def key_id(private_key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of the key's public half."""
    public = private_key.public_key() if isinstance(private_key, rsa.RSAPrivateKey) else private_key
    numbers = public.public_numbers()
    members = {
        "e": to_base64url_uint(numbers.e).decode(),
        "kty": "RSA",
        "n": to_base64url_uint(numbers.n).decode(),
    }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64url_encode(hashlib.sha256(canonical).digest()).decode()


def public_jwk(private_key: rsa.RSAPrivateKey, kid: str | None = None) -> dict[str, str]:
    numbers = private_key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid or key_id(private_key),
        "n": to_base64url_uint(numbers.n).decode(),
        "e": to_base64url_uint(numbers.e).decode(),
    }


def jwks_for(private_key: rsa.RSAPrivateKey, kid: str | None = None) -> dict[str, Any]:
    """The public JWK set of ``private_key``; ``kid`` defaults to its RFC 7638 thumbprint."""
    return {"keys": [public_jwk(private_key, kid)]}


def mint_token(
    private_key: rsa.RSAPrivateKey,
    *,
    issuer: str,
    audience: str,
    space_id: str,
    subject: str,
    space_claim: str = "space_id",
    ttl_seconds: int = 3600,
    scopes: Iterable[str] = (),
    kid: str | None = None,
    claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """An RS256 token; ``claims`` are merged last, and a claim set to ``None`` is left out."""
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        space_claim: space_id,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    scope = " ".join(scopes)
    if scope:
        payload["scope"] = scope
    payload.update(claims or {})
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid or key_id(private_key)}
    return jwt.encode(payload, private_key, algorithm="RS256", headers=headers)


class IssuerServer(ThreadingHTTPServer):
    """Serves a JWKS and an OpenID configuration; counts the JWKS requests it answers."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, jwks_path: str, issuer: str) -> None:
        super().__init__(address, _IssuerHandler)
        self.jwks_path = jwks_path or "/"
        self.config_path = urlsplit(issuer).path.rstrip("/") + "/.well-known/openid-configuration"
        self.issuer = issuer
        self.jwks: dict[str, Any] = {"keys": []}
        self.jwks_url = ""  # set by the caller once the bound port is known
        self.failing = False  # answer 503 to every request (tests simulate an outage)
        self.jwks_requests = 0
        self._count_lock = threading.Lock()

    def count_jwks_request(self) -> None:
        with self._count_lock:
            self.jwks_requests += 1


class _IssuerHandler(BaseHTTPRequestHandler):
    server: IssuerServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == self.server.jwks_path:
            self.server.count_jwks_request()
            body: dict[str, Any] | None = self.server.jwks
        elif path == self.server.config_path:
            body = {
                "issuer": self.server.issuer,
                "jwks_uri": self.server.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256"],
                "subject_types_supported": ["public"],
            }
        else:
            body = None
        if self.server.failing:
            self._send(503, {"error": "unavailable"})
        elif body is None:
            self._send(404, {"error": "not_found"})
        else:
            self._send(200, body)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dev issuer: " + format, *args)


def make_issuer_server(
    jwks: dict[str, Any], *, issuer: str, jwks_url: str, host: str, port: int
) -> IssuerServer:
    """A bound (not yet serving) server answering at ``jwks_url``'s path; ``port`` 0 picks one."""
    server = IssuerServer((host, port), jwks_path=urlsplit(jwks_url).path, issuer=issuer)
    server.jwks = jwks
    if port == 0:  # advertise the port the system picked
        jwks_url = urlsplit(jwks_url)._replace(netloc=f"{host}:{server.server_port}").geturl()
    server.jwks_url = jwks_url
    return server


def build_dev_issuer(
    settings: Settings, host: str | None = None, port: int | None = None
) -> IssuerServer:
    """The development issuer, bound but not serving: call ``serve_forever()`` on it."""
    refuse_in_production(settings)
    url = urlsplit(settings.auth.jwks_url)
    host = host or url.hostname or "127.0.0.1"
    port = port if port is not None else (url.port or 80)
    key = ensure_dev_key(settings.auth.dev_signing_key)
    return make_issuer_server(
        jwks_for(key),
        issuer=settings.auth.issuer,
        jwks_url=settings.auth.jwks_url,
        host=host,
        port=port,
    )


def serve_dev_issuer(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve the dev key's JWKS at ``settings.auth.jwks_url`` until interrupted (foreground)."""
    server = build_dev_issuer(settings, host, port)
    log.info("dev issuer serving %s (issuer %s)", server.jwks_url, settings.auth.issuer)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
