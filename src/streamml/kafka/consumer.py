"""Batched consumption: one call returns a whole :class:`RecordBatch`, sized by count and deadline.

Works as a consumer-group member (``subscribe``) or without a group (explicit assignment), starting from the
beginning, the end, an offset or a timestamp. Transactional input is read ``read_committed`` by default.

librdkafka fetches ahead of the application, and checks its limits per partition: each partition's fetch
queue stops growing at ``queued.min.messages`` records or ``queued.max.messages.kbytes``, overshot by up to
one fetch (``max.partition.fetch.bytes``), and a full queue waits ``fetch.queue.backoff.ms`` before the next
fetch. Its defaults (100,000 records, 64 MiB, 1 MiB, 1 s) let a worker on a backlog hold up to ~65 MiB per
partition that it has not asked for yet. Ours keep ~9 MiB per partition ahead (a full batch of ~800-byte records)
and refill after 20 ms, so a poll still returns full batches without slowing the loop. ``properties`` override them.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as CKafkaError

from streamml.errors import KafkaError, TopicNotFoundError
from streamml.kafka.cluster import translate

log = logging.getLogger(__name__)

Start = Literal["earliest", "latest"] | int

#: records librdkafka tries to keep fetched ahead per partition: two of the Runner's default batches
PREFETCH_RECORDS = 20_000
#: the most data (KiB) kept fetched ahead per partition (librdkafka checks it per partition's queue): one full
#: batch of typical records; less makes batches smaller, and state writes and commits per record dearer
PREFETCH_KBYTES = 8 * 1024
#: one fetch request (all partitions on a broker) and its share per partition: a record larger than either
#: is still returned whole, so these bound memory, not the largest record
FETCH_MAX_BYTES = 4 * 1024 * 1024
PARTITION_FETCH_MAX_BYTES = 1024 * 1024
#: how long a partition whose queue is full waits before fetching again (librdkafka's default is 1 s, which
#: starves a loop that drains a small queue faster than that)
FETCH_QUEUE_BACKOFF_MS = 20


@dataclass(frozen=True)
class StartAt:
    """Where to start reading: ``earliest``/``latest``, an ``offset`` or a ``timestamp_ms`` per partition."""

    position: Literal["earliest", "latest"] = "earliest"
    offset: int | None = None
    timestamp_ms: int | None = None

    @classmethod
    def parse(cls, value: Start | StartAt) -> StartAt:
        if isinstance(value, StartAt):
            return value
        if isinstance(value, int):
            return cls(offset=value)
        if value not in ("earliest", "latest"):
            raise KafkaError(f"invalid start position '{value}'", hint="use earliest, latest or an offset")
        return cls(position=value)


class RecordBatch:
    """Records of one poll as columns. Columns are built on first access, so unused ones cost nothing."""

    __slots__ = ("__dict__", "_messages")

    def __init__(self, messages: list[Message]) -> None:
        self._messages = messages

    def __len__(self) -> int:
        return len(self._messages)

    def take(self, rows: np.ndarray | list[int]) -> RecordBatch:
        """The records at ``rows``, in that order, as a batch of their own."""
        messages = self._messages
        return RecordBatch([messages[i] for i in np.asarray(rows, np.int64).tolist()])

    @cached_property
    def values(self) -> list[bytes | None]:
        return [m.value() for m in self._messages]

    @cached_property
    def keys(self) -> list[bytes | None]:
        return [m.key() for m in self._messages]

    @cached_property
    def timestamps(self) -> np.ndarray:
        """Record timestamps in epoch milliseconds (int64)."""
        return np.fromiter((m.timestamp()[1] for m in self._messages), dtype=np.int64, count=len(self))

    @cached_property
    def partitions(self) -> np.ndarray:
        return np.fromiter((m.partition() for m in self._messages), dtype=np.int32, count=len(self))

    @cached_property
    def offsets(self) -> np.ndarray:
        return np.fromiter((m.offset() for m in self._messages), dtype=np.int64, count=len(self))

    @cached_property
    def topics(self) -> list[str | None]:
        return [m.topic() for m in self._messages]

    @cached_property
    def headers(self) -> list[Any]:
        """Per record, its headers as a list of (name, value) pairs, or None."""
        return [m.headers() for m in self._messages]

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the offset after the last record of this batch (what a commit stores)."""
        return {key: offset + 1 for key, offset in self._per_partition(last=True).items()}

    def first_offsets(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the offset of the first record of this batch."""
        return self._per_partition(last=False)

    def _per_partition(self, *, last: bool) -> dict[tuple[str, int], int]:
        """Per (topic, partition), the offset of its last (or first) record in this batch."""
        if not self._messages:
            return {}
        partitions, offsets = self.partitions, self.offsets
        topics = self.topics
        out: dict[tuple[str, int], int] = {}
        if topics[0] == topics[-1] and len(set(topics)) == 1:  # the usual case: one topic, vectorised
            for p in np.unique(partitions):
                mine = offsets[partitions == p]
                out[(str(topics[0]), int(p))] = int(mine.max() if last else mine.min())
            return out
        pick = max if last else min
        for t, p, o in zip(topics, partitions.tolist(), offsets.tolist(), strict=True):
            key = (str(t), int(p))
            out[key] = pick(out[key], o) if key in out else o
        return out


class BatchConsumer:
    """A confluent-kafka consumer that hands out :class:`RecordBatch` es.

    With ``group_id`` it joins that consumer group (``subscribe``) and offsets are committed explicitly or via
    a transaction; without one, it reads every partition of ``topics`` by assignment and commits nothing.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[str],
        *,
        group_id: str | None = None,
        start: Start | StartAt = "earliest",
        isolation: Literal["read_committed", "read_uncommitted"] = "read_committed",
        track_end: bool = False,
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self.start = StartAt.parse(start)
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._bootstrap = str(config.get("bootstrap.servers"))
        conf: dict[str, Any] = {
            **config,
            "group.id": group_id or f"streamml-nogroup-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "latest" if self.start.position == "latest" else "earliest",
            "isolation.level": isolation,
            "enable.partition.eof": track_end,
            "fetch.max.bytes": FETCH_MAX_BYTES,
            "max.partition.fetch.bytes": PARTITION_FETCH_MAX_BYTES,
            "queued.min.messages": PREFETCH_RECORDS,
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            "fetch.wait.max.ms": 100,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10_000,
            "socket.nagle.disable": True,
            "heartbeat.interval.ms": 1_000,
        }
        conf.update(properties or {})
        try:
            self._consumer = Consumer(conf)
        except KafkaException as exc:
            raise translate(exc, "creating consumer", self._bootstrap) from None
        self.at_end: set[tuple[str, int]] = set()
        #: Per (topic, partition), the offset its last end-of-partition event was at: the end the broker
        #: reported when the fetch caught up (an event below a planned end means "not there yet").
        self.end_offsets: dict[tuple[str, int], int] = {}
        self._group_metadata: Any = None
        if group_id:
            self._consumer.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked)
        else:
            self._consumer.assign(self._initial_assignment())

    # -- assignment ---------------------------------------------------------------------------------------
    def _partitions_of(self, topic: str) -> list[int]:
        try:
            meta = self._consumer.list_topics(topic, timeout=10.0).topics.get(topic)
        except KafkaException as exc:
            raise translate(exc, f"reading metadata of '{topic}'", self._bootstrap) from None
        if meta is None or meta.error is not None or not meta.partitions:
            raise TopicNotFoundError(topic)
        return sorted(meta.partitions)

    def _positioned(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        start = self.start
        if start.timestamp_ms is not None:
            query = [TopicPartition(tp.topic, tp.partition, start.timestamp_ms) for tp in tps]
            found = self._consumer.offsets_for_times(query, timeout=10.0)
            return [TopicPartition(tp.topic, tp.partition, OFFSET_END if tp.offset < 0 else tp.offset) for tp in found]
        if start.offset is not None:
            return [TopicPartition(tp.topic, tp.partition, start.offset) for tp in tps]
        pos = OFFSET_END if start.position == "latest" else OFFSET_BEGINNING
        return [TopicPartition(tp.topic, tp.partition, pos) for tp in tps]

    def _initial_assignment(self) -> list[TopicPartition]:
        tps = [TopicPartition(t, p) for t in self.topics for p in self._partitions_of(t)]
        if self.start.position == "latest" and self.start.offset is None and self.start.timestamp_ms is None:
            # the end as of now, not as of the first fetch: a record written right after this returns is read
            return [TopicPartition(tp.topic, tp.partition, self._end_of(tp)) for tp in tps]
        return self._positioned(tps)

    def _end_of(self, tp: TopicPartition) -> int:
        try:
            return int(self._consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)[1])
        except KafkaException as exc:
            raise translate(exc, f"reading the end of '{tp.topic}' [{tp.partition}]", self._bootstrap) from None

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._group_metadata = None  # the generation changed
        if self.start.offset is not None or self.start.timestamp_ms is not None:
            # explicit positions apply only where the group has no committed offset yet
            committed = consumer.committed(partitions, timeout=10.0)
            fresh = [tp for tp in committed if tp.offset < 0]
            positioned = {(tp.topic, tp.partition): tp for tp in self._positioned(fresh)}
            partitions = [positioned.get((tp.topic, tp.partition), tp) for tp in partitions]
        consumer.incremental_assign(partitions)
        log.info("assigned %s", [(tp.topic, tp.partition) for tp in partitions])
        if self._on_assign is not None:
            self._on_assign(partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._group_metadata = None
        log.info("revoked %s", [(tp.topic, tp.partition) for tp in partitions])
        if self._on_revoke is not None:
            self._on_revoke(partitions)
        consumer.incremental_unassign(partitions)

    # -- reading ------------------------------------------------------------------------------------------
    def poll_batch(self, max_records: int = 10_000, timeout_s: float = 0.5) -> RecordBatch:
        """Up to ``max_records`` records, adaptively: under load, whatever is buffered (a full batch); when
        idle, the first record to arrive (waiting at most ``timeout_s``) with whatever came along with it."""
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=0)
            if not messages and timeout_s > 0:
                first = self._consumer.poll(timeout_s)
                if first is not None:
                    messages = [first, *self._consumer.consume(num_messages=max_records - 1, timeout=0)]
        except KafkaException as exc:
            raise translate(exc, "consuming", self._bootstrap) from None
        if messages and any(m.error() is not None for m in messages):
            messages = self._drop_events(messages)
        return RecordBatch(messages)

    def _drop_events(self, messages: list[Message]) -> list[Message]:
        kept = []
        for m in messages:
            err = m.error()
            if err is None:
                kept.append(m)
            elif err.code() == CKafkaError._PARTITION_EOF:
                key = (str(m.topic()), int(m.partition() or 0))
                self.at_end.add(key)
                offset = m.offset()
                self.end_offsets[key] = -1 if offset is None else int(offset)
            elif err.code() == CKafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicNotFoundError(m.topic() or ",".join(self.topics))
            elif err.fatal():
                raise KafkaError(f"consumer failed: {err.str()}")
            else:
                log.warning("consumer: %s", err.str())
        return kept

    def reached_end(self) -> bool:
        """True when every assigned partition has signalled end-of-partition (needs ``track_end=True``)."""
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        return bool(assigned) and assigned <= self.at_end

    def clear_end(self) -> None:
        """Forget end-of-partition events seen so far (before reading a new assignment)."""
        self.at_end.clear()
        self.end_offsets.clear()

    # -- positions ----------------------------------------------------------------------------------------
    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.at_end.discard((topic, partition))
        self.end_offsets.pop((topic, partition), None)
        self._consumer.seek(TopicPartition(topic, partition, offset))

    def seek_to_timestamp(self, timestamp_ms: int) -> None:
        """Move every assigned partition to the first offset at or after ``timestamp_ms``."""
        query = [TopicPartition(tp.topic, tp.partition, timestamp_ms) for tp in self._consumer.assignment()]
        for tp in self._consumer.offsets_for_times(query, timeout=10.0):
            self.seek(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)

    def assignment(self) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def positions(self) -> list[TopicPartition]:
        """The next offset to read per assigned partition (what a transaction sends as consumed offsets)."""
        return list(self._consumer.position(self._consumer.assignment()))

    def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """Commit ``offsets`` (topic, partition) -> next offset, or the current positions, synchronously."""
        tps = (
            [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            if offsets is not None
            else [tp for tp in self.positions() if tp.offset >= 0]
        )
        if not tps:
            return
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            raise translate(exc, "committing offsets", self._bootstrap) from None

    def committed_offsets(self, timeout_s: float = 30.0) -> dict[tuple[str, int], int]:
        """The group's committed offset per assigned partition (negative: nothing committed yet)."""
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        try:
            committed = self._consumer.committed(assigned, timeout=timeout_s)
        except KafkaException as exc:
            raise translate(exc, "reading committed offsets", self._bootstrap) from None
        return {(tp.topic, tp.partition): tp.offset for tp in committed}

    def rewind(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Seek each partition back to ``offsets`` (a negative offset: to the beginning)."""
        for (topic, partition), offset in offsets.items():
            self.seek(topic, partition, offset if offset >= 0 else OFFSET_BEGINNING)

    def group_metadata(self) -> Any:
        """The group's metadata for transactional offset commits (cached until the next rebalance)."""
        if self._group_metadata is None:
            self._group_metadata = self._consumer.consumer_group_metadata()
        return self._group_metadata

    @property
    def raw(self) -> Consumer:
        """The underlying confluent-kafka consumer, for what this wrapper does not cover."""
        return self._consumer

    def close(self) -> None:
        """Leave the group (triggering a rebalance for the others) and release resources."""
        with contextlib.suppress(RuntimeError):  # already closed
            self._consumer.close()

    def __enter__(self) -> BatchConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
