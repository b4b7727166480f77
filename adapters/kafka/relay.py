"""The relay (DESIGN §4): an application's notification log, in order, onto Kafka.

Each round reads a batch of notifications after the position stored in ``relay_positions``,
produces their envelopes (DESIGN §3; key = aggregate id) with the idempotent producer, waits
until the broker acknowledged every one, and only then stores the last notification id. A crash
anywhere re-publishes part of a batch (same ``event_id``, same bytes) and never loses an event.
When caught up it sleeps on ``LISTEN <recorder.channel_name>`` (``agents_events``,
``calls_events``: eventsourcing NOTIFYs it on every insert), with a short timeout in case a
notification is lost. ``run_relay`` runs one Relay per application, each in its own thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Producer
from eventsourcing.application import Application
from eventsourcing.persistence import Notification
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool

from adapters.kafka.producer import build_producer
from adapters.kafka.topics import domain_topics, ensure_topics_when_ready
from adapters.services import Services
from domain.contract import envelope, topic_for
from infra.settings import Settings

log = logging.getLogger(__name__)
# longest pause between two tries while Kafka or PostgreSQL is away: short, so that the backlog
# starts draining within seconds of the service coming back
RETRY_MAX_SECONDS = 5.0

SELECT_POSITION = "SELECT position FROM relay_positions WHERE application = %s"
UPSERT_POSITION = (
    "INSERT INTO relay_positions (application, position) VALUES (%s, %s) "
    "ON CONFLICT (application) DO UPDATE SET position = excluded.position, updated_at = now() "
    "WHERE relay_positions.position < excluded.position"
)


class DeliveryFailed(Exception):
    """The broker did not acknowledge every message of a batch; the position was not moved."""


class UndecodableNotification(Exception):
    """A stored event could not be turned into an envelope.

    The relay does not skip it and does not dead-letter it: the event store holds only events
    that our own code wrote, so an event we cannot read back is a bug (a missing upcaster, a
    renamed class without a stable TOPIC, ...). Skipping would silently break the "in order,
    nothing lost" promise for every consumer. The relay publishes everything before it, stops
    there, and logs this ERROR (with the notification id) on every retry until the code is fixed.
    """

    def __init__(self, notification_id: int, topic: str, cause: BaseException) -> None:
        super().__init__(
            f"notification {notification_id} (topic {topic!r}) cannot be decoded: "
            f"{type(cause).__name__}: {cause}; the relay stops before it until the code is fixed"
        )
        self.notification_id = notification_id


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes
    value: bytes
    position: int


def encode(
    app: Application[Any], notifications: Sequence[Notification], prefix: str
) -> tuple[list[Message], UndecodableNotification | None]:
    """Kafka messages for ``notifications``, in order, up to the first that cannot be decoded
    (returned as the second item, else None). Value: the envelope as compact UTF-8 JSON."""
    messages: list[Message] = []
    for n in notifications:
        try:
            env = envelope(app.mapper.to_domain_event(n), n.id)
            value = json.dumps(env, separators=(",", ":"), ensure_ascii=False)
            topic = topic_for(env["type"], prefix)
        except Exception as exc:  # noqa: BLE001 - any failure here is the same bug
            return messages, UndecodableNotification(n.id, n.topic, exc)
        messages.append(Message(topic, env["aggregate_id"].encode(), value.encode(), n.id))
    return messages, None


class Relay:
    """Publishes one Application's events to Kafka, in notification order, at least once."""

    def __init__(
        self,
        app: Application[Any],
        pool: ConnectionPool,
        settings: Settings,
        *,
        producer_factory: Callable[[], Producer] | None = None,
        batch_size: int = 1000,
        ack_timeout: float = 75.0,
        idle_wait: float = 0.5,
        log_every: float = 10.0,
    ) -> None:
        self.app = app
        self.name = app.name
        self.pool = pool
        self.settings = settings
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.idle_wait = idle_wait
        self.log_every = log_every
        self.published = 0  # messages acknowledged by the broker since start
        self._producer_factory = producer_factory or (lambda: build_producer(settings))
        self._producer: Producer | None = None
        self._position: int | None = None  # the stored position, cached; None = re-read it
        self._listener: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()  # run_forever's: a pending flush gives up when it is set

    def run_once(self) -> int:
        """Publish the next batch; return how many events the broker acknowledged.

        Raises ``DeliveryFailed`` (position unchanged) or ``UndecodableNotification`` (after
        publishing and storing everything before the bad notification).
        """
        if self._position is None:
            self._position = self.stored_position()
        notifications = self.app.recorder.select_notifications(  # type: ignore[attr-defined]
            self._position, self.batch_size, inclusive_of_start=False
        )
        messages, undecodable = encode(self.app, notifications, self.settings.topic_prefix)
        if messages:
            try:
                self._publish(messages)
                self._store_position(messages[-1].position)
            except BaseException:
                self._position = None
                raise
            self._position = messages[-1].position
            self.published += len(messages)
        if undecodable is not None:
            raise undecodable
        return len(messages)

    def _publish(self, messages: list[Message]) -> None:
        """Produce every message, then wait until each one is acknowledged (or failed)."""
        if self._producer is None:
            self._producer = self._producer_factory()
        producer = self._producer
        errors: list[KafkaError] = []
        acked = 0

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            nonlocal acked
            if err is None:
                acked += 1
            else:
                errors.append(err)

        try:
            for m in messages:
                while True:
                    try:
                        producer.produce(m.topic, m.value, m.key, on_delivery=on_delivery)
                        break
                    except BufferError:  # local queue full: serve callbacks, then retry
                        producer.poll(0.05)
            deadline = time.monotonic() + self.ack_timeout
            while (unacked := producer.flush(0.5)) and time.monotonic() < deadline:
                if self._stop.is_set():
                    break
        except Exception as exc:  # e.g. KafkaException from a producer in a fatal state
            self._discard_producer()
            raise DeliveryFailed(f"{self.name}: produce failed: {exc}") from exc
        if errors or unacked or acked != len(messages):
            first = errors[0].str() if errors else f"{unacked} unacknowledged (timeout or stop)"
            self._discard_producer()
            raise DeliveryFailed(
                f"{self.name}: {acked}/{len(messages)} acknowledged "
                f"(positions {messages[0].position}..{messages[-1].position}): {first}"
            )

    def _discard_producer(self) -> None:
        """A failed batch is retried whole, from the stored position, by a fresh producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.purge(in_queue=True, in_flight=True, blocking=False)
                producer.poll(0)
            except Exception:  # discarding it anyway
                log.debug("purging a failed producer raised", exc_info=True)

    def stored_position(self) -> int:
        """The last notification id the broker acknowledged (0 when nothing was relayed)."""
        with self.pool.connection() as conn:
            row = conn.execute(SELECT_POSITION, (self.name,)).fetchone()
        return int(row[0]) if row else 0

    def _store_position(self, position: int) -> None:
        with self.pool.connection() as conn:
            conn.execute(UPSERT_POSITION, (self.name, position))

    def lag(self) -> int:
        """How many notification ids the relay is behind the event store (0 when caught up)."""
        newest = self.app.recorder.max_notification_id() or 0  # type: ignore[attr-defined]
        return max(0, newest - self.stored_position())

    def run_forever(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set. Never raises for Kafka or database trouble: it logs,
        backs off (0.5 s doubling to RETRY_MAX_SECONDS) and retries the batch from the stored
        position."""
        self._stop = stop
        backoff = 0.0
        last_log, last_count = time.monotonic(), self.published
        log.info("relay %s starting at position %s", self.name, self._quietly(self.stored_position))
        while not stop.is_set():
            try:
                count = self.run_once()
                backoff = 0.0
            except Exception as exc:  # noqa: BLE001 - Kafka/PG outages must not kill the relay
                backoff = min(RETRY_MAX_SECONDS, max(0.5, backoff * 2))
                bug = isinstance(exc, UndecodableNotification)
                log.log(logging.ERROR if bug else logging.WARNING,
                        "relay %s: batch not relayed: %r; retrying in %.1fs",
                        self.name, exc, backoff)  # fmt: skip
                stop.wait(backoff)
                continue
            now = time.monotonic()
            if now - last_log >= self.log_every:
                done, took = self.published - last_count, now - last_log
                log.info("relay %s: %d events in %.0fs (%.1f/s), position %s, lag %s", self.name,
                         done, took, done / took, self._position,
                         self._quietly(self.lag))  # fmt: skip
                last_log, last_count = now, self.published
            if count < self.batch_size:
                self.wait_for_events(self.idle_wait, stop)

    def wait_for_events(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until the event store NOTIFYs an insert (True), ``timeout`` seconds pass or
        ``stop`` is set (False). Checks ``stop`` at least every half second."""
        deadline = time.monotonic() + timeout
        try:
            conn = self._listen_connection()
            while (left := deadline - time.monotonic()) > 0 and not (stop and stop.is_set()):
                notified = False
                for _ in conn.notifies(timeout=min(left, 0.5), stop_after=1):
                    notified = True
                if notified:
                    for _ in conn.notifies(timeout=0.001):  # drain: one round serves them all
                        pass
                    return True
        except psycopg.Error as exc:
            log.warning("relay %s: LISTEN connection lost (%s); polling", self.name, exc)
            self._close_listener()
            (stop or threading.Event()).wait(max(0.0, deadline - time.monotonic()))
        return False

    def _listen_connection(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            conn = psycopg.connect(
                self.settings.postgres.conninfo(), autocommit=True, connect_timeout=5
            )
            channel = self.app.recorder.channel_name  # type: ignore[attr-defined]
            conn.execute(SQL("LISTEN {}").format(Identifier(channel)))
            self._listener = conn
        return self._listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except Exception:  # closing a broken connection: nothing else to do
                log.debug("closing the LISTEN connection raised", exc_info=True)

    def _quietly(self, read: Callable[[], int]) -> int | None:
        try:
            return read()
        except Exception:  # noqa: BLE001 - only for logging
            return None

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (its position is simply not stored) and release connections."""
        self._close_listener()
        if self._producer is not None:
            self._producer.flush(timeout)
            self._producer = None


def run_relay(container: Services, stop: threading.Event | None = None) -> None:
    """Entry point of ``voxagent relay``: create the topics, then relay every application
    (``agents``, ``calls``, ``webhooks``, ``numbers``, ``billing``), each in a thread of its
    own with its own ``relay_positions`` row, until ``stop`` is set (the CLI sets it on
    SIGTERM/SIGINT). Migrates nothing."""
    stop = stop or threading.Event()
    settings: Settings = container.settings
    if not ensure_topics_when_ready(settings, domain_topics(settings), stop):
        return
    relays = [Relay(app, container.pool, settings) for app in container.applications()]
    threads = [
        threading.Thread(target=r.run_forever, args=(stop,), name=f"relay-{r.name}", daemon=True)
        for r in relays
    ]
    try:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(0.5)  # short joins: the main thread keeps taking signals
    finally:
        stop.set()
        for thread in threads:
            thread.join(10.0)
        for relay in relays:
            relay.close()
