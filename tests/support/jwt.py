"""Test helpers for authenticated API tests: a loopback JWKS server and tokens it vouches for.

    with JwksServer() as issuer:
        app.state.verifier = JwtVerifier(issuer.auth_settings())
        client.get("/api/agents", headers=issuer.headers("space-1"))

Keys, JWKS and tokens come from :mod:`infra.devauth`, the same code as the development issuer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any, Self

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.utils import base64url_encode

from infra.devauth import (
    IssuerServer,
    generate_key,
    jwks_for,
    key_id,
    make_issuer_server,
    mint_token,
    public_jwk,
)
from infra.settings import AuthSettings


class JwksServer:
    """Serves a fresh key's JWKS on 127.0.0.1 (ephemeral port) from a background thread."""

    def __init__(
        self, *, audience: str = "voxagent-api", space_claim: str = "space_id", realm: str = "test"
    ) -> None:
        self.audience = audience
        self.space_claim = space_claim
        self.realm = realm
        self.key = generate_key()
        self.kid = key_id(self.key)
        self.url = ""
        self.issuer = ""
        self._stranger: rsa.RSAPrivateKey | None = None
        self._server: IssuerServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        path = f"/realms/{self.realm}"
        server = make_issuer_server(
            jwks_for(self.key),
            issuer=f"http://127.0.0.1{path}",
            jwks_url=f"http://127.0.0.1:0{path}/protocol/openid-connect/certs",
            host="127.0.0.1",
            port=0,
        )
        self.url = server.jwks_url
        self.issuer = server.issuer = f"http://127.0.0.1:{server.server_port}{path}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="jwks", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; a verifier that needs the JWKS afterwards finds it unreachable."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def _running(self) -> IssuerServer:
        if self._server is None:
            raise RuntimeError("the JwksServer is not running; use it as a context manager")
        return self._server

    @property
    def jwks_requests(self) -> int:
        """How many times the JWKS has been fetched."""
        return self._running.jwks_requests

    @property
    def failing(self) -> bool:
        return self._running.failing

    @failing.setter
    def failing(self, value: bool) -> None:
        """While true, every request gets 503 (an issuer outage)."""
        self._running.failing = value

    def auth_settings(self, **overrides: Any) -> AuthSettings:
        """AuthSettings pointing at this server; ``overrides`` replace any field."""
        fields: dict[str, Any] = {
            "jwks_url": self.url,
            "issuer": self.issuer,
            "audience": self.audience,
            "space_claim": self.space_claim,
        }
        return AuthSettings(**{**fields, **overrides})

    @property
    def jwks(self) -> dict[str, Any]:
        return self._running.jwks

    @jwks.setter
    def jwks(self, value: dict[str, Any]) -> None:
        """Replace the served JWK set (e.g. with one holding no usable key)."""
        self._running.jwks = value

    def add_key(self) -> rsa.RSAPrivateKey:
        """Publish one more signing key (a rotation); mint with it via ``mint(key=...)``."""
        key = generate_key()
        self.jwks = {"keys": [*self.jwks["keys"], public_jwk(key)]}
        return key

    @property
    def stranger_key(self) -> rsa.RSAPrivateKey:
        """A key this server never publishes."""
        if self._stranger is None:
            self._stranger = generate_key()
        return self._stranger

    def mint(
        self,
        space_id: str | None,
        /,
        subject: str | None = "user-1",
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        ttl_seconds: int = 3600,
        scopes: tuple[str, ...] = (),
        now: float | None = None,
        **claims: Any,
    ) -> str:
        """A token this server vouches for; ``claims`` override any claim (``None`` drops it).

        ``space_id`` None leaves out the space claim; ``key`` signs with another key (its
        thumbprint is the ``kid`` unless ``kid`` is given).
        """
        if subject is None:
            claims.setdefault("sub", None)
        if space_id is None:
            claims[self.space_claim] = None
        signer = key or self.key
        return mint_token(
            signer,
            issuer=self.issuer,
            audience=self.audience,
            space_id=space_id or "",
            subject=subject or "",
            space_claim=self.space_claim,
            ttl_seconds=ttl_seconds,
            scopes=scopes,
            kid=kid or key_id(signer),
            claims=claims,
            now=now,
        )

    def mint_expired(self, space_id: str, /, **kwargs: Any) -> str:
        """A token that expired an hour ago (well past any leeway)."""
        return self.mint(space_id, now=time.time() - 7200, ttl_seconds=3600, **kwargs)

    def mint_unknown_key(self, space_id: str, /, **kwargs: Any) -> str:
        """A token signed by a key this server does not publish (so its ``kid`` is unknown)."""
        return self.mint(space_id, key=self.stranger_key, **kwargs)

    def claims(self, space_id: str, /, subject: str = "user-1", **overrides: Any) -> dict[str, Any]:
        """Valid claims, for forging tokens by hand (see :func:`forge_token`)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            self.space_claim: space_id,
            "iat": now,
            "exp": now + 3600,
        }
        return {**claims, **overrides}

    def headers(self, space_id: str, /, subject: str = "user-1", **kwargs: Any) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for a fresh valid token."""
        return bearer(self.mint(space_id, subject, **kwargs))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forge_token(
    claims: dict[str, Any], *, alg: str, secret: bytes = b"", kid: str | None = None
) -> str:
    """A hand-built token: ``alg="none"`` is unsigned, ``"HS256"`` is an HMAC with ``secret``."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid

    def part(value: dict[str, Any]) -> str:
        return base64url_encode(json.dumps(value, separators=(",", ":")).encode()).decode()

    signing_input = f"{part(header)}.{part(claims)}"
    if alg == "none":
        signature = b""
    elif alg == "HS256":
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    else:
        raise ValueError(f"forge_token does not forge {alg}")
    return f"{signing_input}.{base64url_encode(signature).decode()}"
