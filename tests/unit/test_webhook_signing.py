"""Standard Webhooks signing, checked against the reference verifier (`standardwebhooks`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from adapters.webhooks.signing import signature, signed_headers
from commands.webhooks import check_secret, new_secret

pytestmark = pytest.mark.unit

BODY = json.dumps({"type": "call.ended", "data": {"call_id": "call_1", "note": "é"}}).encode()


def now() -> int:
    return int(time.time())


def test_signed_headers_pass_the_reference_verifier() -> None:
    secret = new_secret()
    headers = signed_headers("msg_1", now(), BODY, [secret])

    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"].isdigit()
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "Voxagent-Webhooks/1"


def test_during_a_rotation_a_verifier_holding_either_secret_accepts() -> None:
    old, new = new_secret(), new_secret()
    headers = signed_headers("msg_2", now(), BODY, [old, new])

    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_a_tampered_body_is_rejected() -> None:
    secret = new_secret()
    headers = signed_headers("msg_3", now(), BODY, [secret])

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"call_1", b"call_2"), headers)


def test_a_wrong_secret_is_rejected() -> None:
    headers = signed_headers("msg_4", now(), BODY, [new_secret()])

    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_a_wrong_message_id_is_rejected() -> None:
    secret = new_secret()
    headers = signed_headers("msg_5", now(), BODY, [secret])

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_6"})


def test_signature_matches_the_specification_by_hand() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = hmac.new(key, b"msg_7.1700000000." + BODY, hashlib.sha256).digest()

    assert (
        signature(secret, "msg_7", 1700000000, BODY) == "v1," + base64.b64encode(expected).decode()
    )


def test_signing_needs_at_least_one_secret() -> None:
    with pytest.raises(ValueError, match="at least one"):
        signed_headers("msg_8", now(), BODY, [])


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("sk_" + base64.b64encode(bytes(32)).decode(), "must start with 'whsec_'"),
        (base64.b64encode(bytes(32)).decode(), "must start with 'whsec_'"),
        ("whsec_not base64!", "standard base64"),
        ("whsec_" + base64.b64encode(bytes(32)).decode()[:-2], "standard base64"),
        ("whsec_", "not 0"),
        ("whsec_" + base64.b64encode(bytes(23)).decode(), "not 23"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "not 65"),
    ],
)
def test_check_secret_rejects_malformed_secrets_without_echoing_them(
    value: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint) as raised:
        check_secret(value)
    if len(value) > len("whsec_"):
        assert value not in str(raised.value)


@pytest.mark.parametrize("length", [24, 32, 64])
def test_check_secret_accepts_24_to_64_bytes(length: int) -> None:
    value = "whsec_" + base64.b64encode(bytes(length)).decode()
    assert check_secret(value) == value


def test_new_secrets_are_valid_and_distinct() -> None:
    first, second = new_secret(), new_secret()

    assert check_secret(first) == first
    assert first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
