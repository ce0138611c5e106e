"""Per-query counters, the end-to-end latency histogram and the time each batch spends in each stage of the
worker loop, read by ``status`` and exported to Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: bucket bounds (ms) of the Prometheus export of latency; the last bucket is unbounded
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000)
#: the histogram's own bounds: log-spaced from 0.1 ms to 10 minutes, 1.5% apart (so a quantile read from them
#: is within 1.5% of the measured value), and the export's bounds exactly
FINE_BOUNDS_MS = np.union1d(
    np.geomspace(0.1, 600_000.0, int(np.ceil(np.log(6_000_000.0) / np.log(1.015))) + 1), LATENCY_BUCKETS_MS
)


@dataclass
class LatencyHistogram:
    """Counts of end-to-end latency in fine log-spaced buckets, updated a whole batch at a time."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(FINE_BOUNDS_MS) + 1, np.int64))
    total_ms: float = 0.0

    def observe(self, latencies_ms: np.ndarray) -> None:
        if len(latencies_ms):
            slots = np.searchsorted(FINE_BOUNDS_MS, latencies_ms, side="left")
            self.counts += np.bincount(slots, minlength=len(self.counts))
            self.total_ms += float(latencies_ms.sum())

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float | None:
        """Quantile ``q`` in ms, as the upper bound of its fine bucket (None before any observation)."""
        if self.count == 0:
            return None
        slot = int(np.searchsorted(np.cumsum(self.counts), q * self.count, side="left"))
        return float(FINE_BOUNDS_MS[slot]) if slot < len(FINE_BOUNDS_MS) else float("inf")

    def cumulative(self, bounds_ms: tuple[float, ...] = LATENCY_BUCKETS_MS) -> list[int]:
        """How many observations were at most each of ``bounds_ms`` (for a coarse Prometheus histogram)."""
        running = np.cumsum(self.counts)
        return [int(running[np.searchsorted(FINE_BOUNDS_MS, b, side="right") - 1]) for b in bounds_ms]


#: the stages of the worker loop, in the order a batch goes through them:
#: ``poll`` the consumer call that returned the batch: waiting for the first record, then taking what came
#: with it (a batch closes as soon as its first record is there, so filling it waits for nothing more);
#: ``queued`` the oldest record's age (from its timestamp) when the loop took its batch, so the time it
#: spent reaching the broker, being fetched and waiting behind the previous batch; ``decode`` bytes to Arrow;
#: ``evaluate`` the SQL less the model; ``predict`` the model inside PREDICT; ``encode`` Arrow to bytes;
#: ``produce`` handing the records to the producer; ``commit`` sending the offsets and committing the
#: transaction (exactly-once) or flushing and committing the offsets (at-least-once); ``batch`` from the
#: batch closing to the end of its commit, or of its processing when the commit waits for more batches
STAGES = ("poll", "queued", "decode", "evaluate", "predict", "encode", "produce", "commit", "batch")


@dataclass
class StageTimes:
    """Milliseconds per batch in each stage of the worker loop, one histogram per stage (per batch, never
    per record)."""

    stages: dict[str, LatencyHistogram] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        """One batch spent ``ms`` in ``stage``."""
        histogram = self.stages.get(stage)
        if histogram is None:
            histogram = self.stages[stage] = LatencyHistogram()
        slot = int(np.searchsorted(FINE_BOUNDS_MS, ms, side="left"))
        histogram.counts[slot] += 1
        histogram.total_ms += ms

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Time the ``with`` block as one batch's ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, (time.perf_counter() - start) * 1000)

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        """Per stage seen so far, in loop order: batches timed, p50/p95/p99 and mean ms, total ms."""
        order = {s: i for i, s in enumerate(STAGES)}
        out: dict[str, dict[str, float | int | None]] = {}
        for stage in sorted(self.stages, key=lambda s: (order.get(s, len(order)), s)):
            h = self.stages[stage]
            count = h.count
            out[stage] = {
                "count": count,
                "p50_ms": h.quantile(0.5),
                "p95_ms": h.quantile(0.95),
                "p99_ms": h.quantile(0.99),
                "mean_ms": round(h.total_ms / count, 3) if count else None,
                "total_ms": round(h.total_ms, 3),
            }
        return out


@dataclass
class QueryMetrics:
    """Running totals of one query in this process. Written by the query's thread only."""

    query_id: str
    records_in: int = 0
    records_out: int = 0
    dead_letters: int = 0
    skipped: int = 0
    tombstones_in: int = 0
    cast_failures: int = 0
    late: int = 0
    batches: int = 0
    transactions: int = 0
    rewinds: int = 0
    #: workers replaced by the watchdog (stuck in a call past its deadline)
    replaced: int = 0
    last_batch_size: int = 0
    model_seconds: float = 0.0
    started_at: float = field(default_factory=time.time)
    state: str = "STARTING"
    error: str | None = None
    model_versions: dict[str, str] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    stages: StageTimes = field(default_factory=StageTimes)

    def rate_in(self) -> float:
        elapsed = time.time() - self.started_at
        return self.records_in / elapsed if elapsed > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view for the status topic."""
        return {
            "query": self.query_id,
            "state": self.state,
            "error": self.error,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "dead_letters": self.dead_letters,
            "skipped": self.skipped,
            "cast_failures": self.cast_failures,
            "late": self.late,
            "batches": self.batches,
            "rewinds": self.rewinds,
            "last_batch_size": self.last_batch_size,
            "rate_in": round(self.rate_in(), 1),
            "lag": dict(self.lag),
            "model_versions": dict(self.model_versions),
            "latency_p50_ms": self.latency.quantile(0.5),
            "latency_p95_ms": self.latency.quantile(0.95),
            "latency_p99_ms": self.latency.quantile(0.99),
            "stages": self.stages.snapshot(),
        }
