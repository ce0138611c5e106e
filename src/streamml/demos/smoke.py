"""The smoke pipeline: produce JSON events, copy them exactly-once through a transaction, read them back.

It checks the whole foundation on the configured cluster (or the local broker it starts): topic admin, batched
produce, a consume-transform-produce loop with offsets in the transaction, and a read_committed read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from streamml.config import Settings
from streamml.errors import StreamMLError
from streamml.kafka import Admin, BatchConsumer, LocalBroker, Producer, TransactionalProducer, client_config


@dataclass
class SmokeReport:
    """Counts and rates of one smoke run; ``ok`` when every event arrived exactly once."""

    bootstrap: str
    produced: int
    copied: int
    read_back: int
    unique_ids: int
    produce_rate: float
    copy_rate: float

    @property
    def ok(self) -> bool:
        return self.produced == self.copied == self.read_back == self.unique_ids


def run_smoke(settings: Settings, events: int = 50_000, say: Callable[[str], None] = lambda _: None) -> SmokeReport:
    """Run the smoke pipeline; ``say`` receives one line per step."""
    if not settings.bootstrap:
        info = LocalBroker(settings).start()
        say(f"Kafka {info.version} at {info.bootstrap}" + (" (already running)" if info.already_running else ""))
    config = client_config(settings)
    admin = Admin(config, timeout_s=settings.request_timeout_s)
    run = uuid.uuid4().hex[:8]
    source, sink = f"smoke-events-{run}", f"smoke-copied-{run}"
    admin.create_topic(source, partitions=3)
    admin.create_topic(sink, partitions=3)
    try:
        values = [orjson.dumps({"id": i, "user": f"u{i % 100}", "amount": round(i * 0.13, 2)}) for i in range(events)]
        keys = [str(i % 100).encode() for i in range(events)]
        start = time.perf_counter()
        with Producer(config) as producer:
            producer.produce_batch(source, values, keys)
        produce_rate = events / (time.perf_counter() - start)
        say(f"produced {events:,} events to {source} ({produce_rate:,.0f}/s)")

        copied, copy_rate = _copy_exactly_once(config, source, sink, events, f"smoke-{run}")
        say(f"copied {copied:,} events exactly-once to {sink} ({copy_rate:,.0f}/s)")

        ids: set[int] = set()
        read = 0
        with BatchConsumer(config, [sink], isolation="read_committed", track_end=True) as reader:
            deadline = time.monotonic() + 60
            while not reader.reached_end() and time.monotonic() < deadline:
                batch = reader.poll_batch(20_000, 0.5)
                read += len(batch)
                ids.update(orjson.loads(v)["id"] for v in batch.values if v is not None)
        say(f"read back {read:,} committed events, {len(ids):,} distinct ids")
    finally:
        admin.delete_topic(source, if_exists=True)
        admin.delete_topic(sink, if_exists=True)
    return SmokeReport(str(config["bootstrap.servers"]), events, copied, read, len(ids), produce_rate, copy_rate)


def _copy_exactly_once(config: dict, source: str, sink: str, events: int, group: str) -> tuple[int, float]:
    consumer = BatchConsumer(config, [source], group_id=group)
    producer = TransactionalProducer(config, transactional_id=group)
    copied = 0
    start = time.perf_counter()
    deadline = time.monotonic() + 120
    try:
        while copied < events:
            if time.monotonic() > deadline:
                raise StreamMLError(f"smoke copy stalled after {copied} of {events} events")
            batch = consumer.poll_batch(10_000, 0.5)
            if not len(batch):
                continue
            with producer.transaction(consumer, batch.next_offsets()):
                producer.produce_batch(sink, batch.values, batch.keys)
            copied += len(batch)
    finally:
        consumer.close()
        producer.close()
    return copied, copied / (time.perf_counter() - start)
