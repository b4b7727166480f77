"""A parked ingress message and the port of the journal that keeps parked messages across a
crash (``adapters.postgres.parking`` implements it; ingest owns the working set)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast

from adapters.kafka.consumer import Item
from commands.signals import Signal


@dataclass
class IngestItem(Item):
    """One ingress message; ``value`` is its signal, ``parked_since`` when it was first parked
    (wall clock, epoch seconds; None while it never was)."""

    parked_since: float | None = None

    @property
    def signal(self) -> Signal | None:
        return cast("Signal | None", self.value)


class ParkingJournal(Protocol):
    """Where parked signals survive the process: written before a batch is acknowledged."""

    def load(self) -> list[IngestItem]:
        """Every parked message, oldest first (``value`` not parsed yet)."""
        ...

    def write(self, add: list[IngestItem], remove: list[IngestItem]) -> None:
        """Add and remove parked messages (by ``source``) in one transaction."""
        ...
