"""What the worker tells the platform about a call: signals (docs/signals.md) onto
``<prefix>.ingress.worker.v1``, keyed by call id.

One producer per worker process, shared by its calls. Analytics never fails a call: the
producer buffers in memory (librdkafka) while Kafka is away and delivers when it is back
(``message.timeout.ms=0``: no message expires), ``emit`` never raises, and a delivery that
fails for good is logged with the signal's id. Signal ids are ``<call>-<job>-<n>``: stable for a
re-send, unique across a re-dispatched job.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from commands.signals import iso_ms
from domain.text import scrubbed

log = logging.getLogger(__name__)


def worker_producer(settings: Any) -> Any:
    from adapters.kafka.producer import build_producer

    return build_producer(
        settings,
        **{"message.timeout.ms": 0, "client.id": "voxagent-worker", "linger.ms": 5},
    )


class Poller(threading.Thread):
    """Serves the shared producer's delivery reports in the background."""

    def __init__(self, producer: Any) -> None:
        super().__init__(name="signal-poller", daemon=True)
        self.producer = producer
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.producer.poll(0.2)

    def close(self, timeout: float = 10.0) -> int:
        """Stop polling and flush; returns how many signals are still undelivered."""
        self.stopping.set()
        self.join(1.0)
        left: int = self.producer.flush(timeout)
        if left:
            log.warning("%d call signals still undelivered at shutdown", left)
        return left


class SignalEmitter:
    """The signals of one call."""

    def __init__(
        self, producer: Any, topic: str, *, space_id: str, call_id: str, job_id: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:  # fmt: skip
        self.producer, self.topic = producer, topic
        self.space_id, self.call_id = space_id, call_id
        self.prefix = f"{call_id}-{job_id[-12:]}"
        self.clock = clock
        self.sequence = 0
        self.emitted: list[dict[str, Any]] = []  # what this call sent, for the post-call summary

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        signal = {
            "signal_id": f"{self.prefix}-{self.sequence}", "type": type_,
            "space_id": self.space_id, "call_id": self.call_id, "at": iso_ms(self.clock()),
            "source": "worker", "schema_version": 1, **fields,
        }  # fmt: skip
        self.emitted.append(signal)
        try:
            self.producer.produce(
                self.topic, json.dumps(signal, separators=(",", ":")).encode(),
                self.call_id.encode(), on_delivery=self._delivered,
            )  # fmt: skip
        except BufferError:
            log.error("signal buffer full; dropping %s %s", type_, signal["signal_id"])
        except Exception:  # noqa: BLE001 - a call never fails because analytics is down
            log.exception("could not queue signal %s", signal["signal_id"])
        return signal

    @staticmethod
    def _delivered(err: Any, msg: Any) -> None:
        if err is not None:
            log.error("call signal not delivered (%s): key %s", err, msg.key())

    # -- the signal types -----------------------------------------------------------------
    def started(self) -> None:
        self.emit("call.started")

    def transcript(self, turn_id: str, speaker: str, text: str, start_ms: int, end_ms: int,
                   interrupted: bool = False) -> None:  # fmt: skip
        # what STT heard or the LLM said: made storable (domain.text), or ingest would refuse it
        extra = {"interrupted": True} if interrupted else {}  # a reply the caller cut off
        self.emit("call.transcript", turn_id=turn_id, speaker=speaker, text=scrubbed(text),
                  start_ms=max(start_ms, 0), end_ms=max(end_ms, start_ms, 0),
                  **extra)  # fmt: skip

    def tool_invoked(
        self, turn_id: str | None, name: str, arguments: dict[str, Any], result: Any,
        error: str | None, status: str, latency_ms: int,
    ) -> None:  # fmt: skip
        # the LLM's arguments and the tool's answer are third-party text: made storable
        self.emit("call.tool_invoked", turn_id=turn_id, name=name,
                  arguments=scrubbed(arguments), result=scrubbed(result),
                  error=scrubbed(error), status=status,
                  latency_ms=max(latency_ms, 0))  # fmt: skip

    def dtmf(self, digit: str, offset_ms: int) -> None:
        self.emit("call.dtmf", digit=digit.upper(), offset_ms=max(offset_ms, 0))

    def usage(self, provider: str, model: str, kind: str, quantity: float) -> None:
        if quantity > 0:
            self.emit("call.usage", provider=provider, model=model, kind=kind,
                      quantity=quantity)  # fmt: skip

    def turn_metrics(
        self, turn_id: str, end_of_speech_to_first_audio_ms: int | None,
        stt_final_ms: int | None, llm_first_token_ms: int | None,
        tts_first_byte_ms: int | None, end_of_turn_ms: int | None = None,
    ) -> None:  # fmt: skip
        self.emit("call.turn_metrics", turn_id=turn_id,
                  end_of_speech_to_first_audio_ms=end_of_speech_to_first_audio_ms,
                  stt_final_ms=stt_final_ms, llm_first_token_ms=llm_first_token_ms,
                  tts_first_byte_ms=tts_first_byte_ms,
                  end_of_turn_ms=end_of_turn_ms)  # fmt: skip

    def ended(self, reason: str, duration_ms: int) -> None:
        self.emit("call.ended", reason=reason, duration_ms=max(duration_ms, 0))
