"""Bearer-token authentication: every ``/api`` request names its caller and the caller's space.

Tokens are RS256 JWTs from an OIDC issuer (Keycloak in production, ``infra.devauth`` in
development), checked against the issuer's JWKS, ``iss`` and ``aud``. The claim
``settings.auth.space_claim`` names the space that scopes every read and write.

The app factory sets ``app.state.verifier = JwtVerifier(settings.auth)``; routes take
``caller: CallerDep``. Tokens are never logged.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import anyio.to_thread
import jwt
from fastapi import Depends, Request

from adapters.api.errors import ApiError
from domain.text import text_problem
from infra.settings import AuthSettings

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
MAX_TOKEN_LENGTH = 16_384
UNAVAILABLE_RETRY_SECONDS = 2.0  # after a failed JWKS fetch, answer 503 without refetching
_SPACE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# Unreachable, not JSON (a ValueError from json.load), or holding no usable signing key.
_JWKS_ERRORS = (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError)


@dataclass(frozen=True)
class Caller:
    space_id: str
    subject: str
    scopes: frozenset[str]


def _unauthenticated(message: str, *, invalid_token: bool = True) -> NoReturn:
    # RFC 6750 §3.1: a request with no credentials gets a challenge without an error code.
    challenge = 'Bearer error="invalid_token"' if invalid_token else 'Bearer realm="voxagent"'
    raise ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": challenge})


def _unavailable() -> NoReturn:
    raise ApiError(
        503,
        "auth_unavailable",
        "Tokens cannot be checked right now because the identity provider's keys (JWKS) are "
        "unreachable; retry shortly, and tell your operator if it persists.",
        headers={"Retry-After": str(math.ceil(UNAVAILABLE_RETRY_SECONDS))},
    )


def _rejection(exc: jwt.PyJWTError, settings: AuthSettings) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "The token has expired; get a new one from the identity provider."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The token is not valid yet (`nbf`/`iat` in the future); check the clocks."
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"The token is not meant for this API: its `aud` must include {settings.audience!r}."
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"The token comes from another issuer: use a token issued by {settings.issuer!r}."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The token lacks the required {exc.claim!r} claim; get a token from the issuer."
    if isinstance(exc, jwt.InvalidSignatureError):
        return "The token's signature does not verify; get a new token from the issuer."
    return "The token is not valid; send a token issued for this API."


class JwtVerifier:
    """Checks bearer tokens against the issuer's JWKS; blocking, so call it from a thread.

    The JWKS is cached for ``jwks_cache_seconds``. A token whose ``kid`` is not in the cached set
    (a rotated key) refetches it, at most once per ``jwks_refresh_cooldown_seconds``.
    """

    def __init__(
        self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._client = jwt.PyJWKClient(
            settings.jwks_url,
            cache_jwk_set=True,
            lifespan=settings.jwks_cache_seconds,
            timeout=settings.jwks_timeout_seconds,
        )
        self._lock = threading.Lock()
        self._last_refresh = -math.inf
        self._unavailable_until = -math.inf

    def verify(self, token: str) -> Caller:
        """The caller a token names; raises :class:`ApiError` 401, 403 or 503."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            _unauthenticated("The bearer token is empty or too long; send a valid JWT.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            _unauthenticated("The bearer token is not a well-formed JWT; send a valid JWT.")
        if header.get("alg") != ALGORITHM:
            _unauthenticated(f"The token must be signed with {ALGORITHM}; get one from the issuer.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            _unauthenticated("The token has no `kid` header naming its signing key.")
        key = self._signing_key(kid)
        s = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_seconds,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.PyJWTError as exc:
            log.info("bearer token rejected: %s", type(exc).__name__)
            _unauthenticated(_rejection(exc, s))
        return self._caller(claims)

    def _caller(self, claims: dict[str, Any]) -> Caller:
        subject = claims.get("sub")
        if (
            not isinstance(subject, str)
            or not subject
            or len(subject) > 256
            or text_problem(subject)
        ):
            # the subject is recorded in events as the actor: it must be storable (domain.text)
            _unauthenticated("The token's `sub` claim must be a string of 1-256 characters "
                             "without NUL or invalid Unicode.")  # fmt: skip
        space = claims.get(self._settings.space_claim)
        if not isinstance(space, str) or not _SPACE_ID.fullmatch(space):
            raise ApiError(
                403,
                "space_missing",
                f"The token has no valid {self._settings.space_claim!r} claim naming your space "
                "(1-128 letters, digits, '_', '.', ':' or '-'); ask your administrator to assign "
                "your account to a space.",
            )
        return Caller(space_id=space, subject=subject, scopes=_scopes(claims))

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        with self._lock:  # one fetch at a time, so a cold cache is filled once
            now = self._clock()
            if now < self._unavailable_until:
                _unavailable()
            try:
                key = _match(self._client.get_signing_keys(), kid)
            except _JWKS_ERRORS as exc:
                self._unavailable_until = self._clock() + UNAVAILABLE_RETRY_SECONDS
                log.warning("JWKS fetch from %s failed: %s", self._settings.jwks_url, exc)
                _unavailable()
            cooled_down = now - self._last_refresh >= self._settings.jwks_refresh_cooldown_seconds
            if key is None and cooled_down:  # maybe a rotated key: refetch, boundedly
                self._last_refresh = now
                try:
                    key = _match(self._client.get_signing_keys(refresh=True), kid)
                except _JWKS_ERRORS as exc:  # known keys stay usable: no outage window
                    log.warning("JWKS refetch from %s failed: %s", self._settings.jwks_url, exc)
                    _unavailable()
        if key is None:
            _unauthenticated(
                "The token is signed with a key the issuer does not publish (unknown `kid`); "
                "get a new token from the issuer."
            )
        return key


def _match(keys: list[jwt.PyJWK], kid: str) -> jwt.PyJWK | None:
    return next((k for k in keys if k.key_id == kid), None)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    scopes: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        scopes.update(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        scopes.update(scp.split())
    elif isinstance(scp, list):
        scopes.update(s for s in scp if isinstance(s, str) and s)
    return frozenset(scopes)


def bearer_token(request: Request) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; raises 401 without one."""
    authorization = request.headers.get("authorization")
    if not authorization:
        _unauthenticated(
            "This endpoint needs an `Authorization: Bearer <token>` header with a token from "
            "the identity provider.",
            invalid_token=False,
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        _unauthenticated("The Authorization header must be `Bearer <token>`.")
    return token.strip()


async def get_caller(request: Request) -> Caller:
    """FastAPI dependency: the authenticated caller (the JWKS fetch runs in a worker thread)."""
    token = bearer_token(request)
    verifier: JwtVerifier | None = getattr(request.app.state, "verifier", None)
    if verifier is None:
        raise RuntimeError("app.state.verifier is not set; the app factory must set it.")
    caller = await anyio.to_thread.run_sync(verifier.verify, token)
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
