"""The consumer's read-ahead is bounded: librdkafka buffers a few batches, never the whole backlog of a topic.

A worker that falls behind (or starts on a long history) would otherwise hold up to the queue limit in
memory on top of the batch it is working on. The check reads librdkafka's own statistics (the fetch queue
of every partition) while a consumer sits on a topic holding several times the bound.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest

from streamml.kafka import BatchConsumer, Producer
from streamml.kafka.consumer import FETCH_MAX_BYTES, PARTITION_FETCH_MAX_BYTES, PREFETCH_KBYTES

pytestmark = pytest.mark.broker

RECORD = 1000
PARTITIONS = 2
#: librdkafka checks the limit per partition, and the fetches in flight may overshoot it: by a partition's
#: share each, and by one whole fetch response at most
BOUND = PARTITIONS * (PREFETCH_KBYTES * 1024 + PARTITION_FETCH_MAX_BYTES) + FETCH_MAX_BYTES


class FetchQueue:
    """Bytes librdkafka holds fetched ahead, summed over partitions, from each statistics report."""

    def __init__(self) -> None:
        self.reports: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        queued = sum(
            p.get("fetchq_size", 0)
            for t in stats.get("topics", {}).values()
            for p in t.get("partitions", {}).values()
            if p.get("partition", -1) >= 0
        )
        with self._lock:
            self.reports.append(queued)

    def peaked(self, window: int = 10) -> bool:
        """The queue has held data and its last ``window`` reports went no higher than the ones before."""
        with self._lock:
            reports = list(self.reports)
        return len(reports) >= 2 * window and 0 < max(reports[-window:]) <= max(reports[:-window])

    @property
    def peak(self) -> int:
        with self._lock:
            return max(self.reports, default=0)


def slow_application_step(consumer: BatchConsumer) -> None:
    """Take at most one record and spend 10 ms on it: the fetcher fills the queue faster than this drains it.

    The poll also serves librdkafka's statistics callback.
    """
    consumer.raw.poll(0.1)
    time.sleep(0.01)


def test_consumer_reads_ahead_a_bounded_amount_of_a_large_backlog(
    kafka_config: dict, topic: Callable[..., str]
) -> None:
    name = topic(partitions=PARTITIONS)
    backlog = 4 * BOUND
    records = backlog // RECORD
    value = b"x" * RECORD
    with Producer(kafka_config) as producer:
        for start in range(0, records, 10_000):
            producer.produce_batch(name, [value] * min(10_000, records - start))
        producer.flush()
    queue = FetchQueue()
    properties = {"statistics.interval.ms": 100, "stats_cb": queue}
    with BatchConsumer(kafka_config, [name], group_id=f"{name}-g", properties=properties) as consumer:
        first = consumer.poll_batch(100, 10.0)
        assert len(first) > 0
        deadline = time.monotonic() + 30
        while not queue.peaked() and time.monotonic() < deadline:
            slow_application_step(consumer)
        assert queue.peaked(), f"the fetch queue kept growing: {queue.reports[-10:]}"
    assert queue.peak <= BOUND
    assert queue.peak >= PREFETCH_KBYTES * 1024  # it still reads ahead


def test_consumer_properties_override_the_prefetch_bounds(kafka_config: dict, topic: Callable[..., str]) -> None:
    """A caller that wants a deeper read-ahead (a bulk export, say) says so in ``properties``."""
    name = topic(partitions=1)
    records = 3 * BOUND // RECORD
    with Producer(kafka_config) as producer:
        producer.produce_batch(name, [b"y" * RECORD] * records)
        producer.flush()
    queue = FetchQueue()
    deep = {
        "queued.max.messages.kbytes": 8 * PREFETCH_KBYTES,
        "queued.min.messages": 10 * records,
        "statistics.interval.ms": 100,
        "stats_cb": queue,
    }
    with BatchConsumer(kafka_config, [name], group_id=f"{name}-g", properties=deep) as consumer:
        assert len(consumer.poll_batch(100, 10.0)) > 0
        deadline = time.monotonic() + 30
        while not queue.peaked() and time.monotonic() < deadline:
            slow_application_step(consumer)
        assert queue.peaked(), f"the fetch queue kept growing: {queue.reports[-10:]}"
    assert queue.peak > BOUND
