"""Text our stores can hold: the one rule every string of every command follows.

A command that is accepted becomes an event, and every event must reach every read model: a
value one store cannot hold would be accepted, stored in the event store and then never
projected. So every string a command carries (field values, and the keys and strings nested in
free-form JSON such as agent variables, tool schemas or tool results) must be storable by

- PostgreSQL ``text`` and ``jsonb``: no NUL character (U+0000);
- UTF-8, the encoding of PostgreSQL, ClickHouse and our Kafka messages: no lone surrogate
  (U+D800..U+DFFF), which a Python ``str`` and a JSON ``"\\ud800"`` escape can carry but no
  UTF-8 byte sequence can (it is not valid Unicode text);
- ``jsonb`` numbers: finite (no NaN, no Infinity, which Python's JSON reader accepts).

Every other character is stored and read back exactly (tabs, newlines, other control
characters, noncharacters, emoji). Nesting is bounded (``MAX_DEPTH``) and free-form JSON fields
have a bounded encoded size (``max_json_bytes``), so no event outgrows a Kafka message.

Models derive from ``Storable``: its validator checks every field, whatever its type. A refusal
is a pydantic error of type ``unstorable_text`` (``json_too_deep``, ``json_too_large``), which
the HTTP API answers as 422 ``invalid_request`` and ingest as a rejected signal.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import AfterValidator, BaseModel, field_validator
from pydantic_core import PydanticCustomError

UNSTORABLE_TEXT = "unstorable_text"
JSON_TOO_DEEP = "json_too_deep"
JSON_TOO_LARGE = "json_too_large"
MAX_DEPTH = 32
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored, or None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    char, at = found.group(), found.start()
    if char == "\x00":
        return f"holds a NUL character (U+0000) at index {at}, which cannot be stored; remove it"
    return (
        f"holds a lone surrogate (U+{ord(char):04X}) at index {at}: not valid Unicode, so it "
        "cannot be stored; send text that UTF-8 can encode"
    )


def value_problem(value: Any, depth: int = MAX_DEPTH) -> tuple[str, str, str] | None:
    """The first place in ``value`` (str, number, or lists/dicts of them, keys included) that
    cannot be stored, as ``(error type, where, why)``; None when everything can."""
    if isinstance(value, str):
        why = text_problem(value)
        return None if why is None else (UNSTORABLE_TEXT, "", why)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (UNSTORABLE_TEXT, "", f"is {value}: only finite numbers can be stored")
    if isinstance(value, dict | list | tuple | set | frozenset):
        if depth <= 0:
            return (JSON_TOO_DEEP, "", f"nests deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and (why := text_problem(key)) is not None:
                return (UNSTORABLE_TEXT, f"[{key!r}]", f"(a key) {why}")
            found = value_problem(item, depth - 1)
            if found is not None:
                kind, where, why = found
                label = repr(key) if isinstance(key, str) else str(key)
                return (kind, f"[{label}]{where}", why)
    return None


def check_storable(value: Any) -> Any:
    """``value`` unchanged when every string and number in it can be stored; a pydantic error
    (``unstorable_text`` / ``json_too_deep``) saying where and why otherwise."""
    found = value_problem(value)
    if found is None:
        return value
    kind, where, why = found
    message = f"{where}: {why}" if where else why
    raise PydanticCustomError(kind, "{message}", {"message": message})


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (how events travel on Kafka)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def check_json_size(value: Any, max_bytes: int, what: str = "this value") -> Any:
    size = json_size(value)
    if size > max_bytes:
        raise PydanticCustomError(
            JSON_TOO_LARGE,
            "{what} is {size} bytes as JSON; at most {max_bytes} are allowed",
            {"what": what, "size": size, "max_bytes": max_bytes},
        )
    return value


def max_json_bytes(max_bytes: int) -> AfterValidator:
    """For ``Annotated[dict[str, Any], max_json_bytes(n)]``: a free-form JSON field whose
    compact UTF-8 JSON holds at most ``max_bytes``."""
    return AfterValidator(lambda value: check_json_size(value, max_bytes))


class Storable(BaseModel):
    """A model whose every field holds only storable text and finite numbers (see the module).

    Nested models are checked by their own class: derive them from ``Storable`` too."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        return check_storable(value)


def scrubbed(value: Any, depth: int = MAX_DEPTH) -> Any:
    """``value`` made storable: unstorable characters become U+FFFD, non-finite numbers None,
    nesting beyond ``MAX_DEPTH`` None. Only for reports of what third parties said (a tool's
    HTTP response, a model's output), never for a command: commands are refused instead."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict | list | tuple):
        if depth <= 0:
            return None
        if isinstance(value, dict):
            return {scrubbed(str(k)): scrubbed(v, depth - 1) for k, v in value.items()}
        return [scrubbed(v, depth - 1) for v in value]
    return value
