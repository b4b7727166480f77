"""The bridge's own figures: counters and latency histograms, cheap enough for the media path
(one list increment per sample), served as JSON on ``/stats``."""

from __future__ import annotations

from collections import Counter
from typing import Any

RESOLUTION_MS = 0.05  # bucket width
LIMIT_MS = 500.0  # everything above lands in the last bucket


class Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * (int(LIMIT_MS / RESOLUTION_MS) + 1)
        self.count = 0
        self.total = 0.0
        self.largest = 0.0

    def add(self, ms: float) -> None:
        index = int(ms / RESOLUTION_MS)
        self.buckets[index if index < len(self.buckets) else -1] += 1
        self.count += 1
        self.total += ms
        if ms > self.largest:
            self.largest = ms

    def percentile(self, p: float) -> float | None:
        """The upper edge of the bucket holding the p-th percentile (a slight overestimate)."""
        if not self.count:
            return None
        rank = p / 100 * self.count
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank and n:
                return round((index + 1) * RESOLUTION_MS, 3)
        return round(self.largest, 3)

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count, "p50_ms": self.percentile(50), "p99_ms": self.percentile(99),
            "max_ms": round(self.largest, 3),
            "mean_ms": round(self.total / self.count, 3) if self.count else None,
        }  # fmt: skip


class BridgeMetrics:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.inbound = Histogram()  # caller frame received -> handed to LiveKit
        self.outbound = Histogram()  # agent frame from LiveKit -> sent to the provider
        self.pacing = Histogram()  # |actual - scheduled| of each outbound tick
        self.active = 0

    def reset(self) -> None:
        """Start a new measurement window (the benchmark's warm-up ends)."""
        self.inbound, self.outbound, self.pacing = Histogram(), Histogram(), Histogram()

    def snapshot(self) -> dict[str, Any]:
        return {
            "active_streams": self.active, "counters": dict(self.counters),
            "inbound_latency": self.inbound.summary(),
            "outbound_latency": self.outbound.summary(),
            "pacing_jitter": self.pacing.summary(),
        }  # fmt: skip
