"""Per-query counters and the end-to-end latency histogram, read by ``status`` and exported to Prometheus."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: upper bounds (ms) of the latency histogram's buckets; the last bucket is unbounded
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000)


@dataclass
class LatencyHistogram:
    """Bucket counts of end-to-end latency, updated a whole batch at a time."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BUCKETS_MS) + 1, np.int64))
    total_ms: float = 0.0

    def observe(self, latencies_ms: np.ndarray) -> None:
        if len(latencies_ms):
            slots = np.searchsorted(np.asarray(LATENCY_BUCKETS_MS), latencies_ms, side="left")
            self.counts += np.bincount(slots, minlength=len(self.counts))
            self.total_ms += float(latencies_ms.sum())

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (None before any observation)."""
        if self.count == 0:
            return None
        slot = int(np.searchsorted(np.cumsum(self.counts), q * self.count, side="left"))
        return float(LATENCY_BUCKETS_MS[slot]) if slot < len(LATENCY_BUCKETS_MS) else float("inf")


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
            "latency_p99_ms": self.latency.quantile(0.99),
        }
