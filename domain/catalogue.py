"""The public event types: what integrators can subscribe to and analysts can query."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from eventsourcing.domain import Aggregate

from domain.contract import CONTEXT_OF

_PATTERN = re.compile(r"^(\*|[a-z_]+\.\*|[a-z_]+\.[a-z_]+)$")
TEST_EVENT_TYPE = "webhook.test"  # sent on request to one endpoint, whatever it subscribes to


def _aggregates() -> list[type[Aggregate]]:
    """Every aggregate class of the domain: ``domain/__init__`` imports each aggregate module,
    so the catalogue is whole whenever any domain module is loaded, without importing them here
    (``domain.webhooks`` checks its subscriptions against this catalogue)."""
    found, todo = [], list(Aggregate.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("domain.") and str(getattr(cls, "TOPIC", "")).startswith(
            "voxagent."
        ):
            found.append(cls)
    return sorted(found, key=lambda cls: cls.__qualname__)


@cache
def event_classes() -> tuple[Any, ...]:
    return tuple(
        cls
        for aggregate in _aggregates()
        for cls in vars(aggregate).values()
        if isinstance(cls, type) and "." in str(getattr(cls, "TOPIC", ""))
        and not str(getattr(cls, "TOPIC", "")).startswith("voxagent.")
    )  # fmt: skip


@cache
def event_types() -> frozenset[str]:
    return frozenset(cls.TOPIC for cls in event_classes())


def check_event_pattern(pattern: str) -> str:
    """``*``, ``<aggregate>.*`` or a known event type; ValueError naming the problem."""
    if not _PATTERN.match(pattern):
        raise ValueError(
            f"{pattern!r} is not an event type pattern; use a type such as 'call.ended', "
            "a wildcard such as 'call.*', or '*'"
        )
    if pattern == "*":
        return pattern
    aggregate, name = pattern.split(".", 1)
    if aggregate not in CONTEXT_OF:
        raise ValueError(f"{pattern!r}: unknown aggregate {aggregate!r}; known: "
                         + ", ".join(sorted(CONTEXT_OF)))  # fmt: skip
    if name != "*" and pattern not in event_types():
        known = sorted(t for t in event_types() if t.startswith(aggregate + "."))
        raise ValueError(f"{pattern!r} is not an event type; {aggregate} has: {', '.join(known)}")
    return pattern
