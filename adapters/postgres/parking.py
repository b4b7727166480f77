"""``ingest_parking``: the signals ingest holds until their call exists, kept in PostgreSQL so
that a crash of ingest loses none (the ``ParkingJournal`` of ``adapters.kafka.ingest``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.kafka.parked import IngestItem


class PostgresParkingJournal:
    """``pool`` is called when needed (ingest may start while PostgreSQL is away)."""

    def __init__(self, pool: Callable[[], Any]) -> None:
        self._pool = pool

    @property
    def pool(self) -> Any:
        return self._pool()

    def load(self) -> list[IngestItem]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT topic, kafka_partition, kafka_offset, key, value, parked_at "
                "FROM ingest_parking ORDER BY parked_at, topic, kafka_partition, kafka_offset"
            ).fetchall()
        return [
            IngestItem(topic, partition, offset, key, value, parked_since=since)
            for topic, partition, offset, key, value, since in rows
        ]

    def write(self, add: list[IngestItem], remove: list[IngestItem]) -> None:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if remove:
                cur.executemany(
                    "DELETE FROM ingest_parking "
                    "WHERE topic = %s AND kafka_partition = %s AND kafka_offset = %s",
                    [(i.topic, i.partition, i.offset) for i in remove],
                )
            if add:
                cur.executemany(
                    "INSERT INTO ingest_parking (topic, kafka_partition, kafka_offset, call_id, "
                    "key, value, parked_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [
                        (i.topic, i.partition, i.offset, i.signal.call_id if i.signal else None,
                         i.key, i.raw, i.parked_since)
                        for i in add
                    ],
                )  # fmt: skip
