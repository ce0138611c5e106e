"""Per-query counters, read by status displays and exported to Prometheus."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class QueryMetrics:
    """Running totals of one query in this process. Updated by the query's thread only."""

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
    last_batch_size: int = 0
    started_at: float = field(default_factory=time.time)
    state: str = "STARTING"
    error: str | None = None
    model_versions: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def rate_in(self) -> float:
        elapsed = time.time() - self.started_at
        return self.records_in / elapsed if elapsed > 0 else 0.0
