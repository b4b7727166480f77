"""Who may call in through a SIP trunk: its source addresses and its digest credentials.

An INVITE for one of our ``sip`` numbers is checked against **that number's trunk** only (so a
trunk can never reach another trunk's, or another space's, numbers):

- ``allowed_addresses`` (CIDR blocks): when the trunk lists any, the INVITE's source address
  must fall in one of them;
- ``inbound.username`` (with its password, a side record): when set, the INVITE must carry a
  valid digest ``Authorization`` (RFC 2617 / RFC 7616, ``algorithm=MD5``, ``qop=auth``);
  without one (or with an expired nonce) the answer is a challenge.

A trunk with neither check takes no inbound calls (``domain.sip_trunks.InboundSpec`` says so),
and neither does a number without a trunk: refused, ``trunk_unauthenticated``.

**Nonces are stateless**: ``<expiry>.<random>.<mac>``, the MAC an HMAC-SHA256 keyed by
``telephony.sip_secret`` over the expiry, the random part, the trunk and the SIP Call-ID. Any
API process verifies any other's nonce, nothing is stored, and a nonce (so an ``Authorization``
header) is good only for the call it was issued to, for ``NONCE_TTL_SECONDS``: a header captured
on the wire cannot open another call. The nonce count is not tracked (that would need state);
replays within one Call-ID are the same call anyway (the API is idempotent by Call-ID).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

NONCE_TTL_SECONDS = 300
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*(?:,|$)')
_NC = re.compile(r"^[0-9A-Fa-f]{8}$")


@dataclass(frozen=True)
class Digest:
    """The parameters of a ``Digest`` ``Authorization`` header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None


@dataclass(frozen=True)
class InboundTrunk:
    """What the inbound checks need of a trunk (from ``NumbersApplication.trunk_of`` and
    ``trunk_secret``)."""

    trunk_id: str
    allowed_addresses: Sequence[str]
    username: str | None
    password: str | None = field(repr=False)


@dataclass(frozen=True)
class Verdict:
    """``accept``; ``challenge`` with a fresh ``nonce``; or ``refuse`` with a stable
    ``reason`` (``trunk_unauthenticated``, ``address_not_allowed``, ``digest_invalid``) and the
    detail for the log (never a secret)."""

    action: Literal["accept", "challenge", "refuse"]
    reason: str | None = None
    nonce: str | None = None
    detail: str = ""


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _mac(secret: str, expires: int, salt: str, trunk_id: str, sip_call_id: str) -> str:
    message = f"{expires}.{salt}.{trunk_id}.{sip_call_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def issue_nonce(secret: str, trunk_id: str, sip_call_id: str, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + NONCE_TTL_SECONDS)
    salt = secrets.token_hex(8)
    return f"{expires}.{salt}.{_mac(secret, expires, salt, trunk_id, sip_call_id)}"


def nonce_state(
    nonce: str, secret: str, trunk_id: str, sip_call_id: str, now: float | None = None
) -> Literal["valid", "expired", "forged"]:
    """Whether ``nonce`` is ours for this trunk and call, and still fresh."""
    parts = nonce.split(".")
    if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit():
        return "forged"
    expires, salt, mac = int(parts[0]), parts[1], parts[2]
    if not hmac.compare_digest(mac.encode(), _mac(secret, expires, salt, trunk_id,
                                                  sip_call_id).encode()):  # fmt: skip
        return "forged"
    return "valid" if (time.time() if now is None else now) <= expires else "expired"


def parse_authorization(header: str | None) -> Digest | None:
    """The digest parameters of ``header``; None when it is not a usable Digest header."""
    if not header or header[:7].lower() != "digest ":
        return None
    params: dict[str, str] = {}
    rest = header[7:]
    position = 0
    while position < len(rest):
        found = _PARAM.match(rest, position)
        if found is None or found.end() == position:
            return None
        quoted, bare = found.group(2), found.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[found.group(1).lower()] = value
        position = found.end()
    try:
        return Digest(
            username=params["username"], realm=params["realm"], nonce=params["nonce"],
            uri=params["uri"], response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5"), qop=params.get("qop"),
            nc=params.get("nc"), cnonce=params.get("cnonce"),
        )  # fmt: skip
    except KeyError:
        return None


def expected_response(digest: Digest, password: str, method: str) -> str:
    """RFC 2617's ``response`` for ``digest`` (``qop=auth``, or none as in RFC 2069)."""
    ha1 = md5(f"{digest.username}:{digest.realm}:{password}")
    ha2 = md5(f"{method}:{digest.uri}")
    if digest.qop is None:
        return md5(f"{ha1}:{digest.nonce}:{ha2}")
    return md5(f"{ha1}:{digest.nonce}:{digest.nc}:{digest.cnonce}:{digest.qop}:{ha2}")


def address_allowed(source_ip: str, allowed: Sequence[str]) -> bool:
    try:
        address = ipaddress.ip_address(source_ip.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for block in allowed:
        try:
            if address in ipaddress.ip_network(block, strict=False):
                return True
        except ValueError:
            continue
    return False


def authenticate(
    trunk: InboundTrunk | None, *, source_ip: str, authorization: str | None, method: str,
    sip_call_id: str, secret: str, realm: str, now: float | None = None,
) -> Verdict:  # fmt: skip
    """Whether an INVITE from ``source_ip`` carrying ``authorization`` may come in through
    ``trunk`` (see the module's docstring)."""
    if trunk is None:
        return Verdict("refuse", "trunk_unauthenticated", detail="the number has no trunk")
    has_addresses, has_digest = bool(trunk.allowed_addresses), bool(trunk.username)
    if not has_addresses and not has_digest:
        return Verdict("refuse", "trunk_unauthenticated",
                       detail=f"trunk {trunk.trunk_id} has no inbound checks")  # fmt: skip
    if has_addresses and not address_allowed(source_ip, trunk.allowed_addresses):
        return Verdict(
            "refuse",
            "address_not_allowed",
            detail=f"{source_ip!r} is not an address of trunk {trunk.trunk_id}",
        )
    if not has_digest:
        return Verdict("accept")
    if not trunk.password:  # cannot happen (the command side requires it): never accept
        return Verdict("refuse", "trunk_unauthenticated", detail="the trunk has no password")

    def challenge(detail: str) -> Verdict:
        nonce = issue_nonce(secret, trunk.trunk_id, sip_call_id, now)
        return Verdict("challenge", nonce=nonce, detail=detail)

    digest = parse_authorization(authorization)
    if digest is None:
        return challenge("no digest credentials")
    state = nonce_state(digest.nonce, secret, trunk.trunk_id, sip_call_id, now)
    if state == "forged":  # another call's, another trunk's, or not ours at all
        return challenge("a nonce not issued for this call")
    if digest.algorithm.upper() != "MD5" or digest.qop not in (None, "auth"):
        return Verdict(
            "refuse",
            "digest_invalid",
            detail=f"unsupported algorithm {digest.algorithm!r} / qop {digest.qop!r}",
        )
    if digest.qop == "auth" and not (digest.cnonce and digest.nc and _NC.match(digest.nc)):
        return Verdict("refuse", "digest_invalid", detail="qop=auth without nc and cnonce")
    user_ok = hmac.compare_digest(digest.username.encode(), (trunk.username or "").encode())
    realm_ok = digest.realm == realm
    answer = expected_response(digest, trunk.password, method)
    response_ok = hmac.compare_digest(digest.response.encode(), answer.encode())
    if not (user_ok and realm_ok and response_ok):
        return Verdict(
            "refuse",
            "digest_invalid",
            detail=f"wrong digest credentials for trunk {trunk.trunk_id}",
        )
    if state == "expired":  # right credentials, stale nonce: ask again
        return challenge("the nonce has expired")
    return Verdict("accept")
