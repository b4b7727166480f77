"""An in-memory ``ParkingJournal`` (``adapters.kafka.parked``) for unit tests of ingest."""

from __future__ import annotations

from adapters.kafka.parked import IngestItem


class MemoryJournal:
    """The in-memory ``ParkingJournal`` (unit tests; a journal that survives nothing)."""

    def __init__(self) -> None:
        self.items: dict[str, IngestItem] = {}

    def load(self) -> list[IngestItem]:
        kept = sorted(self.items.values(), key=lambda i: i.parked_since or 0.0)
        return [
            IngestItem(i.topic, i.partition, i.offset, i.key, i.raw, parked_since=i.parked_since)
            for i in kept
        ]

    def write(self, add: list[IngestItem], remove: list[IngestItem]) -> None:
        for item in remove:
            self.items.pop(item.source, None)
        for item in add:
            self.items.setdefault(item.source, item)
