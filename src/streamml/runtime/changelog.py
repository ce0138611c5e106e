"""State of stateful queries, kept as per-key changes in a compacted changelog topic, written in the
consumed-offsets transaction.

At each commit the executor hands out one record per key, window, session or buffered row that changed
since the last commit (a tombstone when it was dropped: a window past its grace, an expired join row) and
one small record with the partition's stream time, so a commit costs what changed, not the whole state, and
no record is larger than one key's state. The changelog has as many partitions as the source: the changes
of source partition ``p`` go to changelog partition ``p``, compaction keeps the latest record per key.

A restarted or newly assigned worker restores only the partitions it was given before it processes any
record: it assigns their changelog partitions directly, plans the end offsets (read_committed: the last
stable offset) up front, reads to them and stops. Records are produced in the caller's transaction, so a
crash neither loses nor double counts.

The topic is created by :func:`streamml.runtime.topics.ensure_changelog_topic` when the query starts. A restore
is not a :class:`~streamml.kafka.compacted.CompactedReader`: it reads only the worker's own partitions, once, to
end offsets planned before it starts, in log order (the executor replays every change), and then stops.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamml.errors import KafkaError
from streamml.kafka.producer import Producer
from streamml.runtime.topics import CHANGELOG_CONFIG, changelog_spec
from streamml.sql import QueryExecutor

__all__ = ["CHANGELOG_CONFIG", "Changelog", "changelog_spec"]

log = logging.getLogger(__name__)


class Changelog:
    """Per-key change writer and restorer for one query's state topic.

    ``partitions`` is how many partitions the topic has (what
    :func:`~streamml.runtime.topics.ensure_changelog_topic` returns). With fewer than the source, source
    partitions share changelog partitions and restores read them whole: keys name their partition, so that
    still works.
    """

    def __init__(self, config: dict[str, Any], topic: str, partitions: int) -> None:
        self.config = config
        self.topic = topic
        self.partitions = max(1, int(partitions))

    def target(self, partition: int) -> int:
        """The changelog partition of source partition ``partition``."""
        return partition if partition < self.partitions else partition % self.partitions

    def write(self, producer: Producer, executor: QueryExecutor, partitions: Iterable[int]) -> int:
        """Queue the changes of each of ``partitions`` since the last write (inside the caller's transaction);
        returns how many records."""
        sent = 0
        for p in sorted(set(partitions)):
            records = executor.changes(p)
            if records.num_rows == 0:
                continue
            keys = records.column("key").to_pylist()
            values = records.column("value").to_pylist()
            producer.produce_batch(self.topic, values, keys, partitions=[self.target(p)] * len(keys))
            sent += len(keys)
        return sent

    def restore(self, executor: QueryExecutor, partitions: Iterable[int], timeout_s: float = 120.0) -> int:
        """Load the committed state of each of ``partitions`` into ``executor`` (replacing what it holds of
        them); returns how many records were read."""
        wanted = sorted(set(partitions))
        if not wanted:
            return 0
        started = time.monotonic()
        sources: dict[int, list[int]] = {}
        for p in wanted:
            sources.setdefault(self.target(p), []).append(p)
        keys, values = self._read(sorted(sources), timeout_s)
        records = pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array(values, pa.binary())})
        for p in wanted:
            executor.load(p, records)
        log.info(
            "restored state of partitions %s from %s: %d records in %.2f s",
            wanted,
            self.topic,
            len(keys),
            time.monotonic() - started,
        )
        return len(keys)

    def _read(self, partitions: list[int], timeout_s: float) -> tuple[list[bytes | None], list[bytes | None]]:
        """Every committed record of changelog ``partitions`` up to the end offsets planned now, in log order
        per partition."""
        conf = {
            **self.config,
            "group.id": f"streamml-restore-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        consumer = Consumer(conf)
        try:
            ends: dict[int, int] = {}
            starts: list[TopicPartition] = []
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout_s)
                if high > low:
                    ends[p] = high
                    starts.append(TopicPartition(self.topic, p, low))
            if not ends:
                return keys, values
            consumer.assign(starts)
            deadline = time.monotonic() + timeout_s
            while ends:
                if time.monotonic() > deadline:
                    raise KafkaError(
                        f"restoring state from '{self.topic}' partitions {sorted(ends)} took over {timeout_s:.0f} s",
                        hint="check the broker; a worker that cannot restore its state processes nothing",
                    )
                for msg in consumer.consume(10_000, 0.5):
                    if msg.error() is not None:
                        continue
                    part, offset = msg.partition(), msg.offset()
                    if part is not None and offset is not None and part in ends and offset < ends[part]:
                        keys.append(msg.key())
                        values.append(msg.value())
                # read_committed: the position passes aborted records and transaction markers too
                for tp in consumer.position([TopicPartition(self.topic, p) for p in list(ends)]):
                    if tp.offset >= ends[tp.partition]:
                        del ends[tp.partition]
        except KafkaException as exc:
            raise KafkaError(f"restoring state from '{self.topic}': {exc}") from None
        finally:
            consumer.close()
        return keys, values
