"""Cheap, careful reading of provider JSON: the helpers both protocols share.

Everything here runs for every media message (50 a second per stream), so it is plain ``json``
and type checks, no validation library. Each failure is a ``ProtocolError`` whose code says what
kind of problem it is and whose text names the field.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from bridge.messages import ProtocolError

DTMF_DIGITS = frozenset("0123456789*#ABCD")


def load(text: str | bytes) -> dict[str, Any]:
    """One WebSocket text message as a JSON object."""
    try:
        message = json.loads(text)
    except (TypeError, ValueError) as exc:  # JSONDecodeError, bad UTF-8, not str/bytes
        raise ProtocolError("invalid_json", f"the message is not JSON ({exc})") from None
    if type(message) is not dict:
        raise ProtocolError("invalid_message", "the message is not a JSON object")
    return message


def obj(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = parent.get(key)
    if type(value) is dict:
        return value
    if value is None:
        raise ProtocolError("missing_field", f"{where} is missing")
    raise ProtocolError("invalid_field", f"{where} must be an object")


def text(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if type(value) is str and value:
        return value
    if value is None:
        raise ProtocolError("missing_field", f"{where} is missing")
    raise ProtocolError("invalid_field", f"{where} must be a non-empty string")


def optional_text(parent: dict[str, Any], key: str, where: str) -> str | None:
    value = parent.get(key)
    if value is None or type(value) is str:
        return value
    raise ProtocolError("invalid_field", f"{where} must be a string")


def integer(parent: dict[str, Any], key: str, where: str) -> int | None:
    """An optional counter sent as a number (VoxImplant) or a decimal string (Twilio)."""
    value = parent.get(key)
    if value is None:
        return None
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit():  # not "-1", "1.5", "١٢"
        return int(value)
    raise ProtocolError("invalid_field", f"{where} must be a whole number, got {value!r:.40}")


def payload(parent: dict[str, Any], key: str, where: str) -> bytes:
    """Base64 audio; strict (no stray characters, correct padding) and never empty."""
    value = parent.get(key)
    if type(value) is not str:
        if value is None:
            raise ProtocolError("missing_field", f"{where} is missing")
        raise ProtocolError("invalid_field", f"{where} must be a base64 string")
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("bad_payload", f"{where} is not valid base64 ({exc})") from None
    if not data:
        raise ProtocolError("bad_payload", f"{where} is empty")
    return data


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def parameters(value: Any, where: str) -> dict[str, str]:
    """Custom parameters as ``dict[str, str]``: an object (or, as VoxImplant may send it, the
    same object serialised to a JSON string) of scalar values; numbers and booleans become
    their JSON text, anything nested is refused."""
    if value is None or value == "":
        return {}
    if type(value) is str:
        try:
            value = json.loads(value)
        except ValueError:
            raise ProtocolError("invalid_field", f"{where} is a string but not JSON") from None
    if type(value) is not dict:
        raise ProtocolError("invalid_field", f"{where} must be an object")
    result: dict[str, str] = {}
    for name, item in value.items():
        if type(item) is str:
            result[name] = item
        elif type(item) in (int, float, bool):
            result[name] = json.dumps(item)
        else:
            raise ProtocolError("invalid_field", f"{where}.{name} must be a string")
    return result


def dtmf_digit(value: Any, where: str) -> str:
    if type(value) is str and value.upper() in DTMF_DIGITS and len(value) == 1:
        return value.upper()
    if value is None:
        raise ProtocolError("missing_field", f"{where} is missing")
    raise ProtocolError(
        "invalid_field", f"{where} must be one of 0-9, *, #, A-D; got {value!r:.20}"
    )
