"""Trunk authentication (adapters/telephony/sip_auth.py): digest per RFC 2617 (MD5, qop=auth),
stateless nonces bound to the trunk and the call, and the trunk's source addresses."""

from __future__ import annotations

import pytest

from adapters.telephony import sip_auth
from adapters.telephony.sip_auth import Digest, InboundTrunk, authenticate, md5

pytestmark = pytest.mark.unit

SECRET = "test-sip-secret"
REALM = "voxagent"
CALL = "a84b4c76e66710@pc33.example.com"
NOW = 1_800_000_000.0
URI = "sip:+14155550100@127.0.0.1:5070"


def header(username: str, password: str, nonce: str, *, realm: str = REALM, uri: str = URI,
           method: str = "INVITE", qop: str | None = "auth", nc: str = "00000001",
           cnonce: str = "0a4f113b", extra: str = "") -> str:  # fmt: skip
    """What a phone sends after a challenge (computed the RFC 2617 way, independently)."""
    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    if qop is None:
        response = md5(f"{ha1}:{nonce}:{ha2}")
        return (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", '
                f'uri="{uri}", response="{response}", algorithm=MD5{extra}')  # fmt: skip
    response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return (
        f'Digest username="{username}",realm="{realm}",nonce="{nonce}",uri="{uri}",'
        f'response="{response}",algorithm=MD5,cnonce="{cnonce}",qop={qop},nc={nc}{extra}'
    )


def trunk(addresses: tuple[str, ...] = (), username: str | None = "pbx",
          password: str | None = "s3cret-pass") -> InboundTrunk:  # fmt: skip
    return InboundTrunk("trunk-1", addresses, username, password if username else None)


def check(t: InboundTrunk | None, authorization: str | None = None, source_ip: str = "10.1.2.3",
          now: float = NOW, call: str = CALL) -> sip_auth.Verdict:  # fmt: skip
    return authenticate(t, source_ip=source_ip, authorization=authorization, method="INVITE",
                        sip_call_id=call, secret=SECRET, realm=REALM, now=now)  # fmt: skip


def nonce_for(call: str = CALL, trunk_id: str = "trunk-1", now: float = NOW) -> str:
    return sip_auth.issue_nonce(SECRET, trunk_id, call, now)


def test_the_rfc_2617_example_response_is_reproduced():
    """RFC 2617 section 3.5 (Mufasa), with its own values."""
    digest = Digest(
        username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html", response="", qop="auth", nc="00000001", cnonce="0a4f113b",
    )  # fmt: skip
    assert sip_auth.expected_response(digest, "Circle Of Life", "GET") == (
        "6629fae49393a05397450978507c4ef1"
    )


def test_a_header_is_parsed_with_quoted_and_bare_values():
    parsed = sip_auth.parse_authorization(header("pbx", "pw", "n.o.nce"))
    assert parsed is not None
    assert (parsed.username, parsed.realm, parsed.nonce, parsed.uri) == ("pbx", REALM, "n.o.nce",
                                                                         URI)  # fmt: skip
    assert (parsed.qop, parsed.nc, parsed.cnonce, parsed.algorithm) == (
        "auth", "00000001", "0a4f113b", "MD5")  # fmt: skip
    for bad in (None, "", "Basic cGJ4OnB3", "Digest username=", 'Digest realm="x"'):
        assert sip_auth.parse_authorization(bad) is None


def test_a_nonce_is_good_for_its_trunk_and_call_until_it_expires():
    nonce = nonce_for()
    assert sip_auth.nonce_state(nonce, SECRET, "trunk-1", CALL, NOW) == "valid"
    later = NOW + sip_auth.NONCE_TTL_SECONDS + 1
    assert sip_auth.nonce_state(nonce, SECRET, "trunk-1", CALL, later) == "expired"
    assert sip_auth.nonce_state(nonce, SECRET, "trunk-2", CALL, NOW) == "forged"
    assert sip_auth.nonce_state(nonce, SECRET, "trunk-1", "other-call", NOW) == "forged"
    assert sip_auth.nonce_state(nonce, "another-secret", "trunk-1", CALL, NOW) == "forged"
    expires, salt, mac = nonce.split(".")
    pushed = f"{int(expires) + 3600}.{salt}.{mac}"  # a later expiry does not verify
    assert sip_auth.nonce_state(pushed, SECRET, "trunk-1", CALL, NOW) == "forged"
    assert sip_auth.nonce_state("garbage", SECRET, "trunk-1", CALL, NOW) == "forged"


def test_without_credentials_a_digest_trunk_challenges_then_accepts_the_right_answer():
    first = check(trunk())
    assert first.action == "challenge" and first.nonce
    assert sip_auth.nonce_state(first.nonce, SECRET, "trunk-1", CALL, NOW) == "valid"
    second = check(trunk(), header("pbx", "s3cret-pass", first.nonce))
    assert second.action == "accept", second
    without_qop = check(trunk(), header("pbx", "s3cret-pass", first.nonce, qop=None))
    assert without_qop.action == "accept", "RFC 2069 answers (no qop) are still digest"


@pytest.mark.parametrize(
    ("username", "password", "realm"),
    [("pbx", "wrong-pass", REALM), ("other", "s3cret-pass", REALM),
     ("pbx", "s3cret-pass", "elsewhere")],
)  # fmt: skip
def test_wrong_credentials_are_refused(username, password, realm):
    nonce = nonce_for()
    verdict = check(trunk(), header(username, password, nonce, realm=realm))
    assert (verdict.action, verdict.reason) == ("refuse", "digest_invalid")
    assert "s3cret" not in verdict.detail


def test_a_nonce_of_another_call_or_trunk_gets_a_new_challenge_not_a_way_in():
    for nonce in (nonce_for(call="other-call"), nonce_for(trunk_id="trunk-2"), "1.2.3"):
        verdict = check(trunk(), header("pbx", "s3cret-pass", nonce))
        assert verdict.action == "challenge", verdict


def test_an_expired_nonce_with_the_right_answer_is_challenged_again():
    nonce = nonce_for(now=NOW - sip_auth.NONCE_TTL_SECONDS - 10)
    verdict = check(trunk(), header("pbx", "s3cret-pass", nonce))
    assert verdict.action == "challenge" and verdict.nonce != nonce


def test_other_algorithms_and_qops_are_refused():
    nonce = nonce_for()
    sha = header("pbx", "s3cret-pass", nonce).replace("algorithm=MD5", "algorithm=SHA-256")
    assert check(trunk(), sha).reason == "digest_invalid"
    auth_int = header("pbx", "s3cret-pass", nonce, qop="auth-int")
    assert check(trunk(), auth_int).reason == "digest_invalid"
    no_cnonce = header("pbx", "s3cret-pass", nonce).replace('cnonce="0a4f113b",', "")
    assert check(trunk(), no_cnonce).reason == "digest_invalid"


def test_source_addresses_are_checked_before_the_digest():
    cidr = trunk(("203.0.113.0/24", "2001:db8::/32"), username=None)
    assert check(cidr, source_ip="203.0.113.77").action == "accept"
    assert check(cidr, source_ip="2001:db8::5").action == "accept"
    assert check(cidr, source_ip="::ffff:203.0.113.9").action == "accept"
    for outside in ("203.0.114.1", "10.0.0.1", "not-an-ip", ""):
        verdict = check(cidr, source_ip=outside)
        assert (verdict.action, verdict.reason) == ("refuse", "address_not_allowed"), outside
    both = trunk(("203.0.113.0/24",))
    assert check(both, source_ip="198.51.100.1").reason == "address_not_allowed"
    assert check(both, source_ip="203.0.113.5").action == "challenge"
    nonce = nonce_for()
    good = header("pbx", "s3cret-pass", nonce)
    assert check(both, good, source_ip="203.0.113.5").action == "accept"
    assert check(both, good, source_ip="198.51.100.1").reason == "address_not_allowed"


def test_a_trunk_with_no_inbound_checks_or_no_trunk_takes_no_calls():
    open_trunk = trunk((), username=None)
    assert (check(open_trunk).action, check(open_trunk).reason) == (
        "refuse",
        "trunk_unauthenticated",
    )
    assert check(None).reason == "trunk_unauthenticated"
    no_password = InboundTrunk("trunk-1", (), "pbx", None)
    assert check(no_password, header("pbx", "", nonce_for())).reason == "trunk_unauthenticated"
