"""Reading a compacted topic: to its end first, then following it, with the latest value per key.

State kept in compacted topics (the catalog, the model control topic, worker status, the table side of
stream-table joins) is read one way: :meth:`CompactedReader.catch_up` reads everything stored so far, or
raises naming the topic when it cannot within its deadline; :meth:`CompactedReader.poll` hands out what
arrived since. A tombstone (null value) deletes its key from :attr:`CompactedReader.latest`.

Constructing a reader does nothing on the cluster: the consumer is created at the first read. A reader made
with ``missing_ok`` reads a missing topic as empty and looks for it again (at most once a second) while it
is polled, so it follows the topic once someone creates it.

    >>> with CompactedReader(config, "_svc_status", missing_ok=True) as reader:    # doctest: +SKIP
    ...     reader.catch_up(timeout_s=10)
    {b'vm/42': b'{"worker": "vm/42", ...}'}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from streamml.errors import KafkaError, TopicNotFoundError
from streamml.kafka.admin import Admin
from streamml.kafka.consumer import BatchConsumer, RecordBatch

log = logging.getLogger(__name__)

#: how often a reader of a missing topic (``missing_ok``) looks for it again
RETRY_MISSING_S = 1.0


class CompactedReader:
    """Reads every partition of ``topic`` from ``start`` (``earliest``: the whole topic; ``latest``: only what
    arrives after the first read); keeps the latest value per key unless ``keep_latest`` is false (a caller
    that keeps its own state, such as a table feed, need not hold a second copy)."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        *,
        start: Literal["earliest", "latest"] = "earliest",
        keep_latest: bool = True,
        missing_ok: bool = False,
    ) -> None:
        self.config = dict(config)
        self.topic = topic
        self.start = start
        self.keep_latest = keep_latest
        self.missing_ok = missing_ok
        #: key -> latest value; a tombstone removes the key
        self.latest: dict[bytes | None, bytes] = {}
        self._consumer: BatchConsumer | None = None
        self._look_again = 0.0

    @property
    def opened(self) -> bool:
        """Whether the reader found its topic and is reading it."""
        return self._consumer is not None

    def _open(self, timeout_s: float) -> bool:
        """Create the consumer once the topic exists; False while it is missing and ``missing_ok``."""
        if self._consumer is not None:
            return True
        if time.monotonic() < self._look_again:
            return False
        try:
            exists = Admin(self.config, timeout_s=max(0.5, timeout_s)).exists(self.topic)
        except KafkaError as exc:
            raise KafkaError(f"cannot read topic '{self.topic}': {exc.message}", hint=exc.hint) from None
        if not exists:
            if not self.missing_ok:
                raise TopicNotFoundError(self.topic)
            self._look_again = time.monotonic() + RETRY_MISSING_S
            return False
        self._consumer = BatchConsumer(self.config, [self.topic], start=self.start, track_end=True)
        return True

    def poll(self, timeout_s: float = 0.0, max_records: int = 1000) -> RecordBatch:
        """Records that arrived since the last read, oldest first per partition (waits up to ``timeout_s`` for
        the first); :attr:`latest` already includes them."""
        if not self._open(max(timeout_s, 10.0)):
            return RecordBatch([])
        assert self._consumer is not None
        batch = self._consumer.poll_batch(max_records, timeout_s)
        if self.keep_latest and len(batch):
            latest = self.latest
            for key, value in zip(batch.keys, batch.values, strict=True):
                if value is None:
                    latest.pop(key, None)
                else:
                    latest[key] = value
        return batch

    def batches_to_end(self, timeout_s: float = 30.0, max_records: int = 1000) -> Iterator[RecordBatch]:
        """The records stored so far, batch by batch, up to the end of every partition.

        Raises :class:`~streamml.errors.KafkaError` naming the topic and the partitions not read to their end
        when that takes longer than ``timeout_s``. A missing topic read with ``missing_ok`` yields nothing.
        """
        deadline = time.monotonic() + timeout_s
        if not self._open(timeout_s):
            return
        assert self._consumer is not None
        while True:
            at_end = self._consumer.reached_end()  # then only what is already fetched is left to read
            batch = self.poll(0.0 if at_end else 0.2, max_records)
            if len(batch):
                yield batch
            elif at_end:
                return
            if time.monotonic() > deadline:
                if at_end:  # a busy topic: every partition was at its end once, which is what was asked
                    return
                behind = sorted(p for t, p in self._consumer.assignment() if (t, p) not in self._consumer.at_end)
                raise KafkaError(
                    f"could not read topic '{self.topic}' to its end within {timeout_s:g} s"
                    + (f" (partitions {behind} not read to their end)" if behind else ""),
                    hint="check that Kafka is reachable and the topic's partitions have leaders",
                )

    def catch_up(self, timeout_s: float = 30.0) -> dict[bytes | None, bytes]:
        """Read everything stored so far (see :meth:`batches_to_end`); returns :attr:`latest`."""
        for _ in self.batches_to_end(timeout_s):
            pass
        return self.latest

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> CompactedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
