"""State of stateful queries, kept in a compacted changelog topic written in the consumed-offsets transaction.

Each input partition's state is one snapshot record keyed by the partition number; compaction keeps the
latest. A restarted or newly assigned worker restores the snapshots of the partitions it was given before it
processes any record, so a crash neither loses nor double counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from streamml.kafka.admin import Admin
from streamml.kafka.consumer import BatchConsumer
from streamml.kafka.producer import Producer
from streamml.sql import QueryExecutor

log = logging.getLogger(__name__)

CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(64 * 1024 * 1024),
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
}


class Changelog:
    """Snapshot writer and restorer for one query's state topic."""

    def __init__(self, config: dict[str, Any], admin: Admin, topic: str) -> None:
        self.config = config
        self.topic = topic
        admin.create_topic(topic, partitions=1, config=CHANGELOG_CONFIG, if_not_exists=True)

    def write(self, producer: Producer, executor: QueryExecutor, partitions: Iterable[int]) -> None:
        """Queue the current snapshot of each partition (inside the caller's transaction)."""
        parts = sorted(set(partitions))
        if parts:
            producer.produce_batch(self.topic, [executor.snapshot(p) for p in parts], [str(p).encode() for p in parts])

    def restore(self, executor: QueryExecutor, partitions: Iterable[int], timeout_s: float = 60.0) -> int:
        """Load the latest committed snapshot of each of ``partitions`` into ``executor``; returns how many."""
        wanted = {str(p).encode() for p in partitions}
        if not wanted:
            return 0
        latest: dict[bytes, bytes | None] = {}
        with BatchConsumer(self.config, [self.topic], isolation="read_committed", track_end=True) as reader:
            deadline = time.monotonic() + timeout_s
            while not reader.reached_end() and time.monotonic() < deadline:
                batch = reader.poll_batch(1000, 0.2)
                for key, value in zip(batch.keys, batch.values, strict=True):
                    if key in wanted:
                        latest[key] = value
        for key, value in latest.items():
            if value is not None:
                executor.restore(int(key), value)
        log.info("restored state of partitions %s from %s", sorted(int(k) for k in latest), self.topic)
        return len(latest)
