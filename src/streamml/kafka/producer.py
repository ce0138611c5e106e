"""Producers: batched sends with delivery tracking, and a transactional producer for exactly-once.

Delivery reports are requested for failures only (``delivery.report.only.error``), so a healthy batch costs
one ``produce`` call per record and no Python callback at all; ``flush`` raises if anything failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException, Message, TopicPartition
from confluent_kafka import Producer as CProducer

from streamml.errors import KafkaError, RecordRejected, TopicNotFoundError
from streamml.kafka.cluster import translate
from streamml.kafka.consumer import BatchConsumer

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes | str]] | None
_CHUNK = 10_000
#: records an aborted transaction purged from the queue: dropped on purpose, not failed
_PURGED = (CKafkaError._PURGE_QUEUE, CKafkaError._PURGE_INFLIGHT)
#: refusals of a record for what it is (size, content): sending it again fails again
_REJECTED = (
    CKafkaError.MSG_SIZE_TOO_LARGE,
    CKafkaError.INVALID_MSG_SIZE,
    CKafkaError.INVALID_RECORD,
    CKafkaError.RECORD_LIST_TOO_LARGE,
    CKafkaError.INVALID_TIMESTAMP,
)


class Producer:
    """An idempotent producer with batch sends and delivery tracking."""

    def __init__(self, config: Mapping[str, Any], properties: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = str(config.get("bootstrap.servers"))
        conf: dict[str, Any] = {
            **config,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1024 * 1024,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1024 * 1024,
            "delivery.report.only.error": True,
            "socket.nagle.disable": True,
            "on_delivery": self._on_delivery,
        }
        conf.update(properties or {})
        try:
            self._producer = CProducer(conf)
        except KafkaException as exc:
            raise translate(exc, "creating producer", self._bootstrap) from None
        self.sent = 0
        self.failed = 0
        self._first_error: str | None = None
        self._first_rejected = False

    def _on_delivery(self, err: Any, msg: Message) -> None:
        if err is not None and err.code() not in _PURGED:
            self.failed += 1
            if self._first_error is None:
                self._first_rejected = err.code() in _REJECTED
                self._first_error = f"{msg.topic()}[{msg.partition()}]: {err.str()}"
                if err.code() in (-188, 3):  # _UNKNOWN_TOPIC, UNKNOWN_TOPIC_OR_PART
                    self._first_error = f"unknown topic '{msg.topic()}'"

    def produce_batch(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        *,
        headers: Sequence[Headers] | Headers | Sequence[Sequence[tuple[str, bytes]]] = None,
        partitions: Sequence[int] | None = None,
        timestamps: Sequence[int] | None = None,
    ) -> int:
        """Queue every record for ``topic``; ``headers`` is one list for all records or one per record."""
        n = len(values)
        if headers or timestamps is not None or partitions is not None:  # the batch API ignores these
            self._produce_each(topic, values, keys, headers, partitions, timestamps)
        else:
            if keys is None:
                messages: list[dict[str, Any]] = [{"value": v} for v in values]
            else:
                messages = [{"value": v, "key": k} for v, k in zip(values, keys, strict=True)]
            for start in range(0, n, _CHUNK):
                self._queue(topic, messages[start : start + _CHUNK])
        self.sent += n
        self._producer.poll(0)
        return n

    def _queue(self, topic: str, messages: list[dict[str, Any]]) -> None:
        """Queue a chunk with one call, retrying the records a full local queue turned away."""
        while messages:
            try:
                queued = self._producer.produce_batch(topic, messages, on_delivery=self._on_delivery)
            except BufferError:
                queued = 0
            except KafkaException as exc:
                raise translate(exc, f"producing to '{topic}'", self._bootstrap) from None
            if queued == len(messages):
                return
            rejected = [m for m in messages if "_error" in m] if queued else messages
            for m in rejected:
                err = m.pop("_error", None)
                if err is not None and getattr(err, "code", lambda: None)() != CKafkaError._QUEUE_FULL:
                    raise KafkaError(f"producing to '{topic}': {err}")
            messages = rejected
            self._producer.poll(0.05)  # local queue full: let deliveries drain

    def _produce_each(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None,
        headers: Any,
        partitions: Sequence[int] | None,
        timestamps: Sequence[int] | None,
    ) -> None:
        """Per-record ``produce`` calls: the batch API carries neither headers nor timestamps.

        Every argument is spelled out per record (-1: the partitioner picks, 0: the current time), so the
        loop builds no dictionaries; failed deliveries reach the callback set in the configuration.
        """
        n = len(values)
        per_record = bool(headers) and not isinstance(headers[0], tuple)
        key_list = [None] * n if keys is None else keys
        header_list = headers if per_record else [headers or None] * n
        partition_list = [-1] * n if partitions is None else np.asarray(partitions, np.int64).tolist()
        stamps = [0] * n if timestamps is None else np.asarray(timestamps, np.int64).tolist()
        produce = self._producer.produce
        done = 0
        while done < n:
            i = done
            try:
                for i in range(done, n):  # resumes where a full queue stopped it
                    produce(
                        topic,
                        values[i],
                        key_list[i],
                        partition=partition_list[i],
                        timestamp=stamps[i],
                        headers=header_list[i],
                    )
                done = n
            except BufferError:
                done = i
                self._producer.poll(0.05)  # local queue full: let deliveries drain, then resume
            except KafkaException as exc:
                raise self._failure(exc, f"producing to '{topic}'") from None

    def _failure(self, exc: KafkaException, action: str) -> KafkaError:
        """The error to raise for ``exc``: :class:`RecordRejected` when a record was refused for itself."""
        err = exc.args[0] if exc.args else None
        if err is not None and err.code() in _REJECTED:
            return RecordRejected(f"{action}: {err.str()}")
        return translate(exc, action, self._bootstrap)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; raise :class:`KafkaError` if any was not delivered."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaError(
                f"{remaining} records were not delivered within {timeout_s:.0f} s",
                hint=f"is the cluster at {self._bootstrap} reachable?",
            )
        self._raise_failures()

    def _raise_failures(self) -> None:
        if self.failed:
            failed, first = self.failed, self._first_error
            self.failed, self._first_error = 0, None
            if first and first.startswith("unknown topic"):
                raise TopicNotFoundError(first.split("'")[1])
            if self._first_rejected:
                raise RecordRejected(f"{failed} records refused by the cluster; first: {first}")
            raise KafkaError(f"{failed} records failed delivery; first: {first}")

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)

    @property
    def raw(self) -> CProducer:
        return self._producer

    def close(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(5.0)


class TransactionalProducer(Producer):
    """Consume-transform-produce with exactly-once: outputs and consumed offsets commit atomically.

    Commit order: produce outputs (and dead letters), send the consumed offsets, commit the transaction.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        transactional_id: str,
        properties: Mapping[str, Any] | None = None,
        init_timeout_s: float = 30.0,
        call_timeout_s: float = 30.0,
    ) -> None:
        props = {
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 60_000,
            # the coordinator answers CONCURRENT_TRANSACTIONS while the previous commit completes: retry soon
            "retry.backoff.ms": 5,
            "retry.backoff.max.ms": 50,
            **(properties or {}),
        }
        super().__init__(config, props)
        self.transactional_id = transactional_id
        self.in_transaction = False
        #: deadline of each blocking transactional call
        self.call_timeout_s = call_timeout_s
        self.current_call: tuple[str, float] | None = None
        try:
            with self._call("init_transactions", init_timeout_s):
                self._producer.init_transactions(init_timeout_s)
        except KafkaException as exc:
            raise translate(exc, f"initialising transactions for '{transactional_id}'", self._bootstrap) from None

    # -- the watchdog's view: which transactional call is running, and until when it may ----------------------
    @contextmanager
    def _call(self, name: str, timeout_s: float) -> Iterator[None]:
        """Mark a blocking transactional call, so :meth:`stalled` can tell when it outlives its deadline.

        librdkafka does not always honour these timeouts (a coordinator that is down can hold
        ``send_offsets_to_transaction`` for minutes), so the caller's supervisor watches instead.
        """
        self.current_call = (name, time.monotonic() + timeout_s)
        try:
            yield
        finally:
            self.current_call = None

    def stalled(self, grace_s: float = 5.0) -> str | None:
        """The transactional call still running ``grace_s`` past its deadline, if any (safe from any thread)."""
        call = self.current_call
        if call is None:
            return None
        name, deadline = call
        late = time.monotonic() - deadline
        return f"{name} is {late:.0f} s past its deadline" if late > grace_s else None

    def begin(self) -> None:
        self._producer.begin_transaction()
        self.in_transaction = True

    def send_offsets(self, consumer: BatchConsumer, offsets: Mapping[tuple[str, int], int] | None = None) -> None:
        """Add consumed offsets (default: the consumer's positions) to the open transaction."""
        tps = (
            [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            if offsets is not None
            else [tp for tp in consumer.positions() if tp.offset >= 0]
        )
        if tps:
            try:
                with self._call("send_offsets_to_transaction", self.call_timeout_s):
                    self._producer.send_offsets_to_transaction(tps, consumer.group_metadata(), self.call_timeout_s)
            except KafkaException as exc:
                raise self._failure(exc, f"sending offsets to transaction '{self.transactional_id}'") from None

    def commit(self, timeout_s: float | None = None) -> None:
        """Commit the open transaction; aborts it and raises when any record failed.

        After a failed commit the transaction is still open unless it was aborted here (the error required
        it) or the producer is fenced or fatally broken, so the caller's :meth:`abort` still works.
        """
        if self.failed:
            self.abort()
            self._raise_failures()
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        try:
            with self._call("commit_transaction", timeout):
                self._producer.commit_transaction(timeout)
        except KafkaException as exc:
            failure = self._failure(exc, f"committing transaction '{self.transactional_id}'")
            self._recover(exc)
            raise failure from None
        self.in_transaction = False
        self._raise_failures()

    def abort(self, timeout_s: float | None = None) -> None:
        if not self.in_transaction:
            return
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        with self._call("abort_transaction", timeout):
            self._producer.abort_transaction(timeout)
        self.in_transaction = False
        self.failed, self._first_error = 0, None  # the aborted records' failures go with them

    def _failure(self, exc: KafkaException, action: str) -> KafkaError:
        """As for any producer, and also when the transaction failed because of a record refused earlier
        (the call then reports only that the transaction is in an erroneous state)."""
        self._producer.poll(0)  # serve the delivery reports that name the refused record
        if self.failed and self._first_rejected:
            return RecordRejected(f"{action}: a record was refused: {self._first_error}")
        return super()._failure(exc, action)

    def _recover(self, exc: KafkaException) -> None:
        err = exc.args[0] if exc.args else None
        if err is None:
            return
        if err.fatal():  # fenced or broken: no transaction can be continued or aborted with this producer
            self.in_transaction = False
        elif err.txn_requires_abort():
            log.warning("transaction '%s' must be aborted: %s", self.transactional_id, err.str())
            self.abort()

    @contextmanager
    def transaction(
        self, consumer: BatchConsumer | None = None, offsets: Mapping[tuple[str, int], int] | None = None
    ) -> Iterator[TransactionalProducer]:
        """``with tp.transaction(consumer): tp.produce_batch(...)`` commits with offsets, or aborts on error."""
        self.begin()
        try:
            yield self
            if consumer is not None:
                self.send_offsets(consumer, offsets)
        except BaseException:
            self.abort()
            raise
        self.commit()

    def close(self, timeout_s: float = 30.0) -> None:
        if self.in_transaction:
            self.abort()
        deadline = time.monotonic() + timeout_s
        self._producer.flush(max(0.0, deadline - time.monotonic()))
