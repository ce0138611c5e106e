"""One persistent query bound to Kafka: consume a micro-batch, decode, evaluate, encode, produce, commit.

Commit order (exactly-once): within one Kafka transaction the worker produces the outputs, the tombstones
and the dead letters, then the state snapshots of the partitions it touched (stateful queries), then sends
the consumed offsets, then commits. A transaction spans the batches of one commit interval; it is committed
early when partitions are revoked, and aborted (with the state reloaded) when anything in it fails.

Under load (a full batch), a query with one source polls the next batch at once and decodes it on a helper
thread while the current one is evaluated, encoded and produced. Records read ahead are not part of any
transaction until they are processed; a rebalance or an abort sends the consumer back to them.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from streamml.config import Settings
from streamml.errors import KafkaError, StreamMLError
from streamml.kafka import Admin, BatchConsumer, Producer, RecordBatch, TransactionalProducer, client_config
from streamml.runtime.changelog import Changelog
from streamml.runtime.codec import DecodedBatch, SinkCodec, SourceCodec
from streamml.runtime.deadletter import DeadLetters
from streamml.runtime.metrics import QueryMetrics
from streamml.runtime.naming import changelog_topic, dead_letter_topic, group_id, transactional_id
from streamml.runtime.options import ErrorPolicy, Guarantee, RuntimeOptions
from streamml.runtime.predict import FAILURE_PREFIX, ModelProvider
from streamml.runtime.tables import TableFeed
from streamml.sql import BatchResult, QueryPlan, Source
from streamml.sql.plan import STREAM_STREAM_JOIN, STREAM_TABLE_JOIN

log = logging.getLogger(__name__)

#: how often an exactly-once worker commits its open transaction (as Kafka Streams does under EOS)
COMMIT_INTERVAL_S = 0.1
LAG_PERIOD_S = 2.0


class QueryFailed(StreamMLError):
    """A persistent query stopped because of an error its error policy says must stop it."""


class PersistentQuery:
    """Runs ``plan`` as a member of the query's consumer group until ``stop`` is set."""

    def __init__(
        self,
        query_id: str,
        plan: QueryPlan,
        sink: Source,
        settings: Settings,
        options: RuntimeOptions | None = None,
        metrics: QueryMetrics | None = None,
        provider: ModelProvider | None = None,
        properties: dict[str, str] | None = None,
    ) -> None:
        self.query_id = query_id
        self.plan = plan
        #: SET properties in force; persistent queries start at the earliest offset unless told otherwise
        self.properties = {k.lower(): str(v) for k, v in (properties or {}).items()}
        self.settings = settings
        self.options = options or RuntimeOptions()
        self.metrics = metrics or QueryMetrics(query_id)
        #: serves PREDICT; asked at each batch boundary which model versions are in force (hot swap)
        self.provider = provider
        self._lag_checked = 0.0
        self.config = client_config(settings)
        self.admin = Admin(self.config, timeout_s=settings.request_timeout_s)
        self.exactly_once = self.options.guarantee is Guarantee.EXACTLY_ONCE
        self.executor = plan.executor()
        self.codecs = {s.topic: SourceCodec(s, settings) for s in plan.sources}
        self.table_source = plan.join.right if plan.join is not None and plan.kind == STREAM_TABLE_JOIN else None
        self.stream_topics = [s.topic for s in plan.sources if s is not self.table_source]
        extra = [pa.field("LATENCY_MS", pa.int64())] if self.options.latency_column else []
        self.sink_codec = SinkCodec(plan, sink, settings, extra)
        self.sink_topic = sink.topic
        self.dlq_topic = dead_letter_topic(settings.service_id, query_id)
        self.changelog = (
            Changelog(self.config, self.admin, changelog_topic(settings.service_id, query_id))
            if plan.stateful and self.table_source is None
            else None
        )
        self.admin.create_topic(self.dlq_topic, partitions=1, if_not_exists=True)
        self._pending: dict[tuple[str, int], int] = {}
        self._touched: set[int] = set()
        self._txn_started = 0.0
        self._lock = threading.RLock()
        self.consumer: BatchConsumer | None = None
        self.producer: Producer | None = None
        self.table_feed: TableFeed | None = None
        #: under load, the next batch is polled early and decoded on this thread while the current one is
        #: evaluated, encoded and produced (one source, no join: decoding is then independent of the state)
        self._decoder = ThreadPoolExecutor(1, f"decode-{query_id}") if plan.join is None else None
        self._ahead: tuple[RecordBatch, Future[DecodedBatch]] | None = None
        #: bumped by every rebalance callback, so a poll that rebalanced can be recognised
        self._generation = 0

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _open(self) -> None:
        reset = "latest" if self.properties.get("auto.offset.reset", "earliest").lower() == "latest" else "earliest"
        if self.table_source is not None:
            codec = self.codecs[self.table_source.topic]
            self.table_feed = TableFeed(self.config, self.table_source, codec, self.executor, self._lock)
            self.table_feed.bootstrap(self.options.max_batch)
        if self.exactly_once:
            txn_id = transactional_id(self.settings.service_id, self.query_id, self.settings.worker_id)
            props = {"message.max.bytes": 64 * 1024 * 1024, "transaction.timeout.ms": 10_000}
            self.producer = TransactionalProducer(self.config, txn_id, props)
        else:
            self.producer = Producer(self.config)
        self.consumer = BatchConsumer(
            self.config,
            self.stream_topics,
            group_id=group_id(self.settings.service_id, self.query_id),
            start=reset,  # type: ignore[arg-type]
            isolation="read_committed",
            on_assign=self._assigned,
            on_revoke=self._revoked,
        )

    def close(self) -> None:
        """Commit what is open, leave the group, release clients."""
        with self._lock:
            try:
                self._commit()
            finally:
                if self.consumer is not None:
                    self.consumer.close()
                if self.table_feed is not None:
                    self.table_feed.close()
                if self.producer is not None:
                    self.producer.close()
                if self._decoder is not None:
                    self._decoder.shutdown(wait=True, cancel_futures=True)
                self._ahead = None  # polled, never processed, never committed: read again by whoever owns it
                self.consumer, self.producer, self.table_feed = None, None, None

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set or a LIMIT is reached; always commits before returning."""
        self._open()
        assert self.consumer is not None
        self.metrics.state = "RUNNING"
        try:
            while not stop.is_set() and not self.executor.done:
                self.step()
        finally:
            self.close()

    def step(self) -> int:
        """Consume and process one micro-batch; returns how many records it held."""
        assert self.consumer is not None
        if self.table_feed is not None:
            self.table_feed.follow(self.options.max_batch)
        batch, decoded = self._next_batch()
        with self._lock:
            if len(batch):
                self._process(batch, decoded)
            # commit at once when caught up (low latency); under load, every COMMIT_INTERVAL_S (throughput)
            caught_up = len(batch) < self.options.max_batch
            if self._pending and (caught_up or time.monotonic() - self._txn_started >= COMMIT_INTERVAL_S):
                self._commit()
        if time.monotonic() - self._lag_checked > LAG_PERIOD_S:
            self._measure_lag()
        return len(batch)

    def _next_batch(self) -> tuple[RecordBatch, DecodedBatch | None]:
        """The batch to process now (and its decoding, when it was decoded ahead); under load, polls the one
        after it and starts decoding that in the background."""
        assert self.consumer is not None
        if self._ahead is not None:
            batch, future = self._ahead
            self._ahead = None
            decoded: DecodedBatch | None = future.result()
        else:
            batch, decoded = self.consumer.poll_batch(self.options.max_batch, self.options.max_wait_ms / 1000), None
        if self._decoder is None or len(batch) < self.options.max_batch:
            return batch, decoded
        generation, rewinds = self._generation, self.metrics.rewinds
        following = self.consumer.poll_batch(self.options.max_batch, 0)
        if self._generation != generation:
            # the group rebalanced inside that poll: give both unprocessed batches back and read on from there
            # (unless the hand-over failed and rewound every partition to its committed offset already)
            if self.metrics.rewinds == rewinds:
                self._unread(batch, following)
            return RecordBatch([]), None
        if len(following):
            codec = self.codecs[following.topics[0] or ""]
            self._ahead = (following, self._decoder.submit(codec.decode, following))
        return batch, decoded

    def _unread(self, *batches: RecordBatch) -> None:
        """Move every still-assigned partition back to the first record of ``batches`` it holds."""
        assert self.consumer is not None
        first: dict[tuple[str, int], int] = {}
        for batch in batches:
            for key, offset in batch.first_offsets().items():
                first[key] = min(first.get(key, offset), offset)
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.raw.assignment()}
        kept = {tp: offset for tp, offset in first.items() if tp in assigned}
        for (topic, partition), offset in kept.items():
            self.consumer.seek(topic, partition, offset)
        log.info("query %s: rebalanced while reading ahead; reading %d partition(s) again", self.query_id, len(kept))

    def _measure_lag(self) -> None:
        """Records behind the end, per assigned partition, from the client's cached watermarks (no request)."""
        assert self.consumer is not None
        self._lag_checked = time.monotonic()
        lag = {}
        for tp in self.consumer.positions():
            _, high = self.consumer.raw.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                lag[f"{tp.topic}/{tp.partition}"] = max(0, high - tp.offset)
        self.metrics.lag = lag

    # -- rebalance ----------------------------------------------------------------------------------------
    def _assigned(self, partitions: list[TopicPartition]) -> None:
        self._generation += 1
        if self.changelog is not None:
            self.changelog.restore(self.executor, {tp.partition for tp in partitions})

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._generation += 1
        with self._lock:
            self._commit()  # hand over the partitions with everything processed so far committed

    # -- processing ---------------------------------------------------------------------------------------
    def _process(self, batch: RecordBatch, decoded: DecodedBatch | None = None) -> None:
        versions = self.provider.at_batch_boundary() if self.provider is not None else {}
        model_version = ",".join(f"{k}:{v}" for k, v in sorted(versions.items())) or None
        dead = DeadLetters()
        topics = batch.topics
        if self.plan.kind == STREAM_STREAM_JOIN and len(set(topics)) > 1:
            right_topic = self.plan.join.right.topic if self.plan.join else ""
            mask = np.fromiter((t == right_topic for t in topics), bool, len(topics))
            parts: list[tuple[str, np.ndarray | None]] = [
                ("left", np.flatnonzero(~mask)),
                ("right", np.flatnonzero(mask)),
            ]
        else:
            side = "right" if self.plan.join is not None and topics[0] == self.plan.join.right.topic else "left"
            parts = [(side, None)]
        for side, rows in parts:
            sub = batch if rows is None else _Subset(batch, rows)
            self._process_side(sub, side, dead, model_version, decoded if rows is None else None)  # type: ignore[arg-type]
        if len(dead):
            self._begin()
            assert self.producer is not None
            self.producer.produce_batch(self.dlq_topic, dead.values, dead.keys, headers=dead.headers)
            self.metrics.dead_letters += len(dead)
        self._begin()
        for key, offset in batch.next_offsets().items():
            self._pending[key] = offset
        if self.provider is not None:
            self.metrics.model_seconds += self.provider.take_model_seconds()
        self.metrics.records_in += len(batch)
        self.metrics.batches += 1
        self.metrics.last_batch_size = len(batch)
        if versions:
            self.metrics.model_versions = versions

    def _process_side(
        self,
        batch: RecordBatch,
        side: str,
        dead: DeadLetters,
        model_version: str | None,
        decoded: DecodedBatch | None = None,
    ) -> None:
        if decoded is None:
            decoded = self.codecs[batch.topics[0] or ""].decode(batch)
        self.metrics.tombstones_in += len(decoded.tombstones)
        if decoded.failures:
            self._reject(batch, decoded.failures, "decode", self.options.on_decode_error, dead, model_version)
        if decoded.table.num_rows == 0:
            return
        result = self.executor.execute(decoded.table, decoded.meta, side=side)
        self.metrics.cast_failures += result.counters.get("cast_failures", 0)
        self.metrics.late += result.counters.get("late", 0)
        if result.failures:
            failures = [(int(decoded.rows[f.index]), f.reason) for f in result.failures]
            predict = [f for f in failures if FAILURE_PREFIX in f[1]]
            evaluate = [f for f in failures if FAILURE_PREFIX not in f[1]]
            for kind, group in (("predict", predict), ("evaluate", evaluate)):
                if group:
                    self._reject(batch, group, kind, self.options.on_eval_error, dead, model_version)
        self._touched.update(int(p) for p in np.unique(batch.partitions))
        self._emit(result, decoded, batch, model_version)

    def _emit(self, result: BatchResult, decoded: DecodedBatch, batch: RecordBatch, model_version: str | None) -> None:
        if result.table.num_rows == 0 and result.tombstones.num_rows == 0:
            return
        self._begin()
        assert self.producer is not None
        if self.options.latency_column and result.table.num_rows:
            now = int(time.time() * 1000)
            latency = pa.array(now - result.timestamps.to_numpy(zero_copy_only=False).astype(np.int64))
            result.table = result.table.append_column("LATENCY_MS", latency)
        dead_tombs = self.sink_codec.tombstones(result)
        if dead_tombs.values:
            self.producer.produce_batch(
                self.sink_topic, dead_tombs.values, dead_tombs.keys, timestamps=dead_tombs.timestamps
            )
        if result.table.num_rows:
            out = self.sink_codec.encode(result, batch.keys, decoded.rows)
            # scored records name the query and model versions; plain SQL output carries no headers, as in ksqlDB
            headers: list[tuple[str, bytes | str]] | None = None
            if model_version is not None:
                headers = [
                    ("streamml.query", self.query_id.encode()),
                    ("streamml.model.version", model_version.encode()),
                ]
            self.producer.produce_batch(
                self.sink_topic, out.values, out.keys, headers=headers, timestamps=out.timestamps
            )
            self.metrics.records_out += len(out.values)
            now_ms = time.time() * 1000
            self.metrics.latency.observe(now_ms - result.timestamps.to_numpy(zero_copy_only=False).astype(np.float64))

    def _reject(
        self,
        batch: RecordBatch,
        failures: list[tuple[int, str]],
        kind: str,
        policy: ErrorPolicy,
        dead: DeadLetters,
        model_version: str | None,
    ) -> None:
        if policy is ErrorPolicy.FAIL:
            row, reason = failures[0]
            raise QueryFailed(
                f"query {self.query_id}: {kind} failed at {batch.topics[row]}[{batch.partitions[row]}]@"
                f"{batch.offsets[row]}: {reason}"
            )
        if policy is ErrorPolicy.SKIP:
            self.metrics.skipped += len(failures)
            log.debug("query %s skipped %d records (%s)", self.query_id, len(failures), kind)
            return
        dead.add(batch, [r for r, _ in failures], [m for _, m in failures], kind, self.query_id, model_version)

    # -- transactions -------------------------------------------------------------------------------------
    def _begin(self) -> None:
        if isinstance(self.producer, TransactionalProducer) and not self.producer.in_transaction:
            self.producer.begin()
            self._txn_started = time.monotonic()

    def _commit(self) -> None:
        if not self._pending or self.producer is None or self.consumer is None:
            return
        if self.changelog is not None and self._touched:
            self._begin()
            self.changelog.write(self.producer, self.executor, self._touched)
        if isinstance(self.producer, TransactionalProducer):
            try:
                self.producer.send_offsets(self.consumer, self._pending)
                self.producer.commit()
            except (KafkaException, KafkaError) as exc:
                self._rewind(exc)
                return
        else:
            self.producer.flush()
            self.consumer.commit(self._pending)
        self.metrics.transactions += 1
        self._pending.clear()
        self._touched.clear()

    def _rewind(self, exc: Exception) -> None:
        """Abort the open transaction and go back to the last committed offsets and state.

        This happens when the group rebalanced while a transaction was open (its offsets are refused); the
        aborted outputs are invisible to read_committed readers, and the records are processed again.
        """
        log.warning("query %s: transaction aborted (%s); rewinding to the committed offsets", self.query_id, exc)
        assert isinstance(self.producer, TransactionalProducer) and self.consumer is not None
        self.producer.abort()
        self._pending.clear()
        self._touched.clear()
        self._ahead = None  # read again from the committed offsets below
        assigned = self.consumer.raw.assignment()
        committed = self.consumer.raw.committed(assigned, timeout=30.0) if assigned else []
        for tp in committed:
            if tp.offset >= 0:
                self.consumer.seek(tp.topic, tp.partition, tp.offset)
            else:  # nothing committed yet: back to where the query starts
                self.consumer.raw.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
        if self.changelog is not None:
            self.executor = self.plan.executor()
            self.changelog.restore(self.executor, {tp.partition for tp in assigned})
        self.metrics.rewinds += 1


class _Subset:
    """The records at ``rows`` of a batch, with the same column interface as :class:`RecordBatch`."""

    def __init__(self, batch: RecordBatch, rows: np.ndarray) -> None:
        self._batch, self._rows = batch, rows

    def __len__(self) -> int:
        return len(self._rows)

    def _pick(self, values: list[Any]) -> list[Any]:
        return [values[i] for i in self._rows]

    @property
    def values(self) -> list[bytes | None]:
        return self._pick(self._batch.values)

    @property
    def keys(self) -> list[bytes | None]:
        return self._pick(self._batch.keys)

    @property
    def topics(self) -> list[str | None]:
        return self._pick(self._batch.topics)

    @property
    def headers(self) -> list[Any]:
        return self._pick(self._batch.headers)

    @property
    def timestamps(self) -> np.ndarray:
        return self._batch.timestamps[self._rows]

    @property
    def partitions(self) -> np.ndarray:
        return self._batch.partitions[self._rows]

    @property
    def offsets(self) -> np.ndarray:
        return self._batch.offsets[self._rows]
