"""One persistent query bound to Kafka: consume a micro-batch, decode, evaluate, encode, produce, commit.

The commit order lives in :class:`streamml.runtime.checkpoint.Checkpoint`: outputs, tombstones and dead
letters, then the state of the partitions touched, then the consumed offsets, then the commit, in one Kafka
transaction (exactly-once). A transaction spans the batches of one commit interval; it is committed early
when partitions are revoked, and aborted (with offsets and state rewound) when anything in it fails.

Each stage (decode, evaluate, predict, produce) has an error policy for the records it cannot handle:
dead-letter (with the stage and reason), skip (counted) or fail (the query stops and says why). A record
the cluster refuses for itself (too large for the topic, invalid) is a produce-stage failure: one that the
size check does not catch makes the query shrink its transactions until the record is alone, and then
handle it by policy, so the same failure never loops on the same offsets.

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
from confluent_kafka import KafkaException, TopicPartition

from streamml.config import Settings
from streamml.errors import KafkaError, RecordRejected, StreamMLError
from streamml.kafka import Admin, BatchConsumer, Producer, RecordBatch, TransactionalProducer, client_config
from streamml.kafka.headers import H_MODEL, H_QUERY, reply_headers
from streamml.runtime.changelog import Changelog
from streamml.runtime.checkpoint import Checkpoint, Output
from streamml.runtime.codec import DecodedBatch, SinkCodec, SourceCodec
from streamml.runtime.deadletter import DeadLetters
from streamml.runtime.metrics import QueryMetrics
from streamml.runtime.naming import changelog_topic, dead_letter_topic, group_id, transactional_id
from streamml.runtime.options import ErrorPolicy, Guarantee, RuntimeOptions
from streamml.runtime.predict import ModelProvider
from streamml.runtime.tables import TableFeed
from streamml.runtime.topics import ensure_changelog_topic, ensure_dead_letter_topic
from streamml.sql import BatchResult, QueryPlan, Source
from streamml.sql.plan import STREAM_STREAM_JOIN, STREAM_TABLE_JOIN, TABLE_TABLE_JOIN

log = logging.getLogger(__name__)

#: how often an exactly-once worker commits its open transaction (as Kafka Streams does under EOS)
COMMIT_INTERVAL_S = 0.1
LAG_PERIOD_S = 2.0
#: rewinds in a row at the same offsets, for a reason other than a refused record, before the query stops
MAX_REPEATED_REWINDS = 5
#: bytes a record needs beyond its key and value (headers, record overhead) when checked against a topic limit
RECORD_OVERHEAD_BYTES = 1024


#: the stages :meth:`PersistentQuery._process` times per batch (see :data:`streamml.runtime.metrics.STAGES`)
_PROCESS_STAGES = ("decode", "evaluate", "predict", "encode", "produce")


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
        #: the models this query's PREDICT calls name: only they are on its records and in its status
        self.model_refs = {c[0] for c in plan.constant_arguments("PREDICT") if c and isinstance(c[0], str)}
        self._lag_checked = 0.0
        self.config = client_config(settings)
        self.admin = Admin(self.config, timeout_s=settings.request_timeout_s)
        self.exactly_once = self.options.guarantee is Guarantee.EXACTLY_ONCE
        self.executor = plan.executor()
        self.codecs = {s.topic: SourceCodec(s, settings, deletes=plan.reads_deletes) for s in plan.sources}
        self.table_source = plan.join.right if plan.join is not None and plan.kind == STREAM_TABLE_JOIN else None
        self.stream_topics = [s.topic for s in plan.sources if s is not self.table_source]
        extra = [pa.field("LATENCY_MS", pa.int64())] if self.options.latency_column else []
        self.sink_codec = SinkCodec(plan, sink, settings, extra)
        self.sink_topic = sink.topic
        self.dlq_topic = dead_letter_topic(settings.service_id, query_id)
        #: the state of a stateful query (no table join), set by :meth:`ensure_topics`
        self.changelog: Changelog | None = None
        self.checkpoint: Checkpoint | None = None
        #: largest record (key + value) the sink topic takes; bigger outputs are produce-stage failures
        self.max_record_bytes = 0
        #: while isolating a record the cluster refuses: the batch size, halved at each refusal
        self._isolating: int | None = None
        self._hunting = False  # the refused record is not found yet: batches stay small
        #: records the cluster refused, found by isolating them: (topic, partition, offset) -> reason
        self._refused: dict[tuple[str | None, int, int], str] = {}
        self._repeats: tuple[dict[tuple[str, int], int], int] = ({}, 0)
        #: the first record and size of the batch processed last
        self._last_batch: tuple[tuple[str | None, int, int] | None, int] = (None, 0)
        #: set when a supervisor gave up on this worker (a call stuck past its deadline): do nothing more
        self.abandoned = False
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
        #: when the last commit ended (monotonic); at-least-once commits its offsets once per interval
        self._committed_at = 0.0
        #: seconds the batch being processed spent so far in each of :data:`_PROCESS_STAGES`
        self._spent: dict[str, float] = dict.fromkeys(_PROCESS_STAGES, 0.0)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def ensure_topics(self) -> None:
        """Create the query's dead-letter topic and, for a stateful query, its changelog (one partition per
        source partition) where they are missing; called when the query starts."""
        ensure_dead_letter_topic(self.admin, self.dlq_topic)
        if self.plan.stateful and self.table_source is None:
            topic = changelog_topic(self.settings.service_id, self.query_id)
            sources = max(len(self.admin.describe_topic(t, with_offsets=False).partitions) for t in self.stream_topics)
            self.changelog = Changelog(self.config, topic, ensure_changelog_topic(self.admin, topic, sources))

    def _open(self) -> None:
        self.ensure_topics()
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
        self.max_record_bytes = self._record_limit()
        self.consumer = BatchConsumer(
            self.config,
            self.stream_topics,
            group_id=group_id(self.settings.service_id, self.query_id),
            start=reset,  # type: ignore[arg-type]
            isolation="read_committed",
            on_assign=self._assigned,
            on_revoke=self._revoked,
        )
        state = _ChangelogState(self) if self.changelog is not None else None
        self.checkpoint = Checkpoint(self.producer, self.consumer, state, exactly_once=self.exactly_once)

    def _record_limit(self) -> int:
        """The sink topic's ``max.message.bytes`` (and the producer's own limit), less the record overhead."""
        topic = self.admin.topic_config(self.sink_topic, include_defaults=True).get("max.message.bytes")
        producer = 64 * 1024 * 1024 if self.exactly_once else 1_000_000
        return min(int(topic or producer), producer) - RECORD_OVERHEAD_BYTES

    def stalled(self) -> str | None:
        """Why this worker is stuck, when a transactional call outlived its deadline (read from any thread)."""
        producer = self.producer
        return producer.stalled() if isinstance(producer, TransactionalProducer) else None

    def abandon(self) -> None:
        """Give up on this worker from another thread: it stops at once, commits nothing, leaves its group.

        Its open transaction is fenced and aborted by the successor that takes its transactional id, as
        after a crash; its stuck thread ends whenever the call it is in returns.
        """
        self.abandoned = True
        consumer = self.consumer
        if consumer is not None:
            consumer.close()

    def close(self) -> None:
        """Commit what is open, leave the group, release clients."""
        if self.abandoned:
            return
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
            while not stop.is_set() and not self.executor.done and not self.abandoned:
                self.step()
        finally:
            self.close()

    def step(self) -> int:
        """Consume and process one micro-batch; returns how many records it held."""
        assert self.consumer is not None
        if self.table_feed is not None:
            self.table_feed.follow(self.options.max_batch)
        batch, decoded = self._next_batch()
        closed = time.perf_counter()
        assert self.checkpoint is not None
        with self._lock:
            if self.abandoned:
                return 0
            if len(batch):
                try:
                    self._process(batch, decoded)
                except KafkaError as exc:  # producing failed: the whole transaction goes back
                    if not self.exactly_once:
                        raise
                    self._rewound(exc, self.checkpoint.rewind)
                    return len(batch)
            # exactly-once: commit at once when caught up (the outputs become readable only then), under load
            # every COMMIT_INTERVAL_S; at-least-once: the outputs are readable once produced, so the offsets
            # are committed every COMMIT_INTERVAL_S, or at once when idle
            caught_up = len(batch) < self.options.max_batch or self._isolating is not None
            if self.exactly_once:
                due = self.checkpoint.due(caught_up, COMMIT_INTERVAL_S)
            else:
                idle = not len(batch) or self._isolating is not None
                late = time.monotonic() - self._committed_at >= COMMIT_INTERVAL_S
                due = bool(self.checkpoint.pending) and (idle or late)
            if due:
                with self.metrics.stages.time("commit"):
                    self._commit()
            if len(batch):
                self.metrics.stages.add("batch", (time.perf_counter() - closed) * 1000)
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
            with self.metrics.stages.time("decode"):  # what is left of decoding it on the helper thread
                decoded: DecodedBatch | None = future.result()
        else:
            limit = self._isolating or self.options.max_batch
            started = time.perf_counter()
            batch, decoded = self.consumer.poll_batch(limit, self.options.max_wait_ms / 1000), None
            if len(batch):
                self.metrics.stages.add("poll", (time.perf_counter() - started) * 1000)
        if len(batch):
            stamps = batch.timestamps
            self.metrics.stages.add("queued", max(0.0, time.time() * 1000 - float(stamps.min())))
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
        if self.abandoned:
            return
        with self._lock:
            self._commit()  # hand over the partitions with everything processed so far committed

    # -- processing ---------------------------------------------------------------------------------------
    def _process(self, batch: RecordBatch, decoded: DecodedBatch | None = None) -> None:
        assert self.checkpoint is not None
        pinned = self.provider.at_batch_boundary() if self.provider is not None else {}
        versions = {ref: label for ref, label in pinned.items() if ref in self.model_refs}
        model_version = ",".join(f"{k}:{v}" for k, v in sorted(versions.items())) or None
        dead = DeadLetters()
        self._spent = dict.fromkeys(_PROCESS_STAGES, 0.0)
        offsets = batch.next_offsets()
        self._last_batch = ((batch.topics[0], int(batch.partitions[0]), int(batch.offsets[0])), len(batch))
        if self._refused:
            batch, decoded = self._without_refused(batch, dead, model_version), None
        touched: set[int] = set()
        topics = batch.topics
        if not topics:
            parts: list[tuple[str, np.ndarray | None]] = []
        elif self.plan.kind in (STREAM_STREAM_JOIN, TABLE_TABLE_JOIN) and len(set(topics)) > 1:
            right_topic = self.plan.join.right.topic if self.plan.join else ""
            mask = np.fromiter((t == right_topic for t in topics), bool, len(topics))
            parts = [
                ("left", np.flatnonzero(~mask)),
                ("right", np.flatnonzero(mask)),
            ]
        else:
            side = "right" if self.plan.join is not None and topics[0] == self.plan.join.right.topic else "left"
            parts = [(side, None)]
        for side, rows in parts:
            sub = batch if rows is None else batch.take(rows)
            self._process_side(sub, side, dead, model_version, touched, decoded if rows is None else None)
        if len(dead):
            started = time.perf_counter()
            self.checkpoint.produce(self.dlq_topic, dead.values, dead.keys, headers=dead.headers)
            self._spent["produce"] += time.perf_counter() - started
            self.metrics.dead_letters += len(dead)
        self.checkpoint.processed(offsets, touched)
        for stage, seconds in self._spent.items():
            if seconds or stage != "decode":  # decoded ahead: timed where the loop waited for it
                self.metrics.stages.add(stage, seconds * 1000)
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
        touched: set[int],
        decoded: DecodedBatch | None = None,
    ) -> None:
        spent = self._spent
        if decoded is None:
            started = time.perf_counter()
            decoded = self.codecs[batch.topics[0] or ""].decode(batch)
            spent["decode"] += time.perf_counter() - started
        self.metrics.tombstones_in += len(decoded.tombstones)
        if decoded.failures:
            self._reject(batch, decoded.failures, "decode", dead, model_version)
        if decoded.table.num_rows == 0:
            return
        started = time.perf_counter()
        result = self.executor.execute(single_chunk(decoded.table), decoded.meta, side=side)
        evaluated = time.perf_counter() - started
        model = self.provider.take_model_seconds() if self.provider is not None else 0.0
        self.metrics.model_seconds += model
        spent["evaluate"] += max(0.0, evaluated - model)
        spent["predict"] += model
        self.metrics.cast_failures += result.counters.get("cast_failures", 0)
        self.metrics.late += result.counters.get("late", 0)
        by_stage: dict[str, list[tuple[int, str]]] = {}
        for f in result.failures:
            by_stage.setdefault(f.stage, []).append((int(decoded.rows[f.index]), f.reason))
        for stage, group in sorted(by_stage.items()):
            self._reject(batch, group, stage, dead, model_version)
        touched.update(int(p) for p in np.unique(batch.partitions))
        self._emit(result, decoded, batch, model_version, dead)

    def _emit(
        self,
        result: BatchResult,
        decoded: DecodedBatch,
        batch: RecordBatch,
        model_version: str | None,
        dead: DeadLetters,
    ) -> None:
        if result.table.num_rows == 0 and result.tombstones.num_rows == 0:
            return
        checkpoint = self.checkpoint
        assert checkpoint is not None
        if self.options.latency_column and result.table.num_rows:
            now = int(time.time() * 1000)
            latency = pa.array(now - result.timestamps.to_numpy(zero_copy_only=False).astype(np.int64))
            result.table = result.table.append_column("LATENCY_MS", latency)
        spent, started = self._spent, time.perf_counter()
        dead_tombs = self.sink_codec.tombstones(result)
        if dead_tombs.values:
            encoded = time.perf_counter()
            checkpoint.produce(self.sink_topic, dead_tombs.values, dead_tombs.keys, timestamps=dead_tombs.timestamps)
            spent["encode"] += encoded - started
            started = time.perf_counter()
            spent["produce"] += started - encoded
        if result.table.num_rows:
            out = self.sink_codec.encode(result, batch.keys, decoded.rows)
            self._drop_oversized(out, result, decoded, batch, model_version, dead)
            encoded = time.perf_counter()
            spent["encode"] += encoded - started
            # scored records name the query and model versions; plain SQL output carries no headers, as in ksqlDB,
            # except a request's correlation and reply headers, which every output record made from it carries
            headers: Any = None
            if model_version is not None:
                headers = [(H_QUERY, self.query_id.encode()), (H_MODEL, model_version.encode())]
            replies = reply_headers(batch.headers, result.indices, decoded.rows)
            if replies is not None:
                headers = [(headers or []) + reply for reply in replies]
            checkpoint.produce(self.sink_topic, out.values, out.keys, headers=headers, timestamps=out.timestamps)
            spent["produce"] += time.perf_counter() - encoded
            self.metrics.records_out += len(out.values)
            now_ms = time.time() * 1000
            self.metrics.latency.observe(now_ms - result.timestamps.to_numpy(zero_copy_only=False).astype(np.float64))

    def _reject(
        self,
        batch: RecordBatch,
        failures: list[tuple[int, str]],
        stage: str,
        dead: DeadLetters,
        model_version: str | None,
        values: list[bytes | None] | None = None,
    ) -> None:
        """Handle the records at the ``failures`` rows of ``batch`` by the policy of ``stage``."""
        policy = self.options.policy(stage)
        if policy is ErrorPolicy.FAIL:
            row, reason = failures[0]
            raise QueryFailed(
                f"query {self.query_id}: {stage} failed at {batch.topics[row]}[{batch.partitions[row]}]@"
                f"{batch.offsets[row]}: {reason}",
                hint=f"the {stage} stage's policy is 'fail'; fix the record or choose 'dead-letter' or 'skip'",
            )
        if policy is ErrorPolicy.SKIP:
            self.metrics.skipped += len(failures)
            log.debug("query %s skipped %d records (%s)", self.query_id, len(failures), stage)
            return
        rows, reasons = [r for r, _ in failures], [m for _, m in failures]
        dead.add(batch, rows, reasons, stage, self.query_id, model_version, values)

    def _drop_oversized(
        self,
        out: Any,
        result: BatchResult,
        decoded: DecodedBatch,
        batch: RecordBatch,
        model_version: str | None,
        dead: DeadLetters,
    ) -> None:
        """Take the output records too large for the sink topic out of ``out``: produce-stage failures."""
        try:
            sizes = np.fromiter(map(len, out.values), np.int64, len(out.values))
        except TypeError:  # a null value (KAFKA format, NULL column) has no size
            sizes = np.fromiter((len(v or b"") for v in out.values), np.int64, len(out.values))
        near = np.flatnonzero(sizes > self.max_record_bytes - RECORD_OVERHEAD_BYTES)
        if out.keys is not None:  # keys count too, but only near the limit is it worth looking at them
            for i in near:
                sizes[i] += len(out.keys[i] or b"")
        large = near[sizes[near] > self.max_record_bytes]
        if not len(large):
            return
        source = result.indices[large]
        rows = [int(decoded.rows[i]) if i >= 0 else 0 for i in source]
        reasons = [
            f"output record of {int(sizes[i])} bytes exceeds the {self.max_record_bytes} bytes topic "
            f"'{self.sink_topic}' takes (max.message.bytes)"
            for i in large
        ]
        self._reject(batch, list(zip(rows, reasons, strict=True)), "produce", dead, model_version,
                     [out.values[i] for i in large])  # fmt: skip
        keep = np.setdiff1d(np.arange(len(out.values)), large)
        out.values = [out.values[i] for i in keep]
        out.keys = None if out.keys is None else [out.keys[i] for i in keep]
        out.timestamps = None if out.timestamps is None else np.asarray(out.timestamps)[keep]
        result.timestamps = result.timestamps.take(pa.array(keep))
        result.indices = result.indices[keep]

    def _without_refused(self, batch: RecordBatch, dead: DeadLetters, model_version: str | None) -> RecordBatch:
        """``batch`` less the records the cluster refused before; those are handled by the produce policy."""
        hits = [
            i
            for i, key in enumerate(zip(batch.topics, batch.partitions.tolist(), batch.offsets.tolist(), strict=True))
            if key in self._refused
        ]
        if not hits:
            return batch
        reasons = [self._refused.pop((batch.topics[i], int(batch.partitions[i]), int(batch.offsets[i]))) for i in hits]
        self._reject(batch, list(zip(hits, reasons, strict=True)), "produce", dead, model_version)
        keep = np.setdiff1d(np.arange(len(batch)), hits)
        return batch.take(keep)

    # -- transactions -------------------------------------------------------------------------------------
    def _commit(self) -> None:
        if self.checkpoint is None or self.abandoned:
            return
        try:
            self.checkpoint.commit()
        except (KafkaException, KafkaError) as exc:
            if not self.exactly_once:
                raise
            self._rewound(exc)
            return
        self.metrics.transactions += 1
        self._committed_at = time.monotonic()
        if self._isolating is not None and not self._hunting:  # the refused record is behind us: grow back
            self._isolating *= 2
            if self._isolating >= self.options.max_batch:
                self._isolating = None

    def _rewound(self, exc: Exception, rewind: Any = None) -> None:
        """After an aborted transaction (offsets and state already rewound unless ``rewind`` is given).

        A group that rebalanced while the transaction was open refuses its offsets: the records are
        processed again, and the aborted outputs stay invisible to read_committed readers. A record the
        cluster refuses for itself is isolated by halving the batch until it is alone, then handled by the
        produce stage's policy. Any other failure that keeps recurring at the same offsets stops the query.
        """
        log.warning("query %s: transaction aborted (%s); rewinding to the committed offsets", self.query_id, exc)
        self._ahead = None  # read again from the committed offsets
        if rewind is not None:
            rewind()
        self.metrics.rewinds += 1
        if isinstance(exc, RecordRejected):
            first, size = self._last_batch
            if self._isolating == 1 and size == 1 and first is not None:
                self._refused[first] = str(exc)  # alone in its transaction: this record is the one refused
                self._hunting = False
                log.warning("query %s: %s[%d]@%d is refused by the cluster", self.query_id, *first)
            else:
                self._isolating = max(1, min(self._isolating or self.options.max_batch, size) // 2)
                self._hunting = True
                log.info("query %s: isolating the refused record in batches of %d", self.query_id, self._isolating)
            return
        assert self.consumer is not None
        at = self.consumer.committed_offsets()
        seen, count = self._repeats
        count = count + 1 if at == seen else 1
        self._repeats = (at, count)
        if count >= MAX_REPEATED_REWINDS:
            raise KafkaError(f"query {self.query_id}: {count} transactions in a row aborted at the same offsets: {exc}")


def single_chunk(table: pa.Table) -> pa.Table:
    """``table`` in one chunk per column: DuckDB scans each chunk on its own, so a decoder's chunks would make
    SQL, and every function in it (PREDICT), run once per chunk of a batch rather than once per batch."""
    if any(column.num_chunks > 1 for column in table.columns):
        return table.combine_chunks()
    return table


class _ChangelogState:
    """A query's state as the checkpoint sees it: its changelog, and the executor the changelog restores."""

    def __init__(self, query: PersistentQuery) -> None:
        self.query = query

    def write(self, output: Output, partitions: set[int]) -> None:
        assert self.query.changelog is not None
        self.query.changelog.write(output, self.query.executor, partitions)  # type: ignore[arg-type]

    def reload(self, partitions: set[int]) -> None:
        assert self.query.changelog is not None
        self.query.changelog.restore(self.query.executor, partitions)  # replaces those partitions' state
