"""The table side of stream-table joins: read the table's topic to its end first, then keep following it.

The topic is read by a :class:`~streamml.kafka.compacted.CompactedReader`; the executor's table state is the
latest value per key (a tombstone deletes the row), so the reader keeps no copy of its own.
"""

from __future__ import annotations

import threading
from typing import Any

from streamml.kafka import RecordBatch
from streamml.kafka.compacted import CompactedReader
from streamml.runtime.codec import SourceCodec
from streamml.sql import QueryExecutor, Source


class TableFeed:
    """Keeps ``executor``'s table state equal to the latest value per key of ``source``'s topic."""

    def __init__(
        self, config: dict[str, Any], source: Source, codec: SourceCodec, executor: QueryExecutor, lock: threading.RLock
    ) -> None:
        self.source, self.executor, self.lock = source, executor, lock
        self.codec = codec.with_deletes()
        self.reader = CompactedReader(config, source.topic, keep_latest=False)

    def bootstrap(self, max_batch: int, timeout_s: float = 120.0) -> None:
        """Apply everything up to the current end of the table's topic (or raise naming the topic after
        ``timeout_s``: a join must not start on part of its table)."""
        for batch in self.reader.batches_to_end(timeout_s, max_batch):
            self.apply(batch)

    def follow(self, max_batch: int) -> None:
        """Apply whatever arrived since the last call, without waiting."""
        self.apply(self.reader.poll(0.0, max_batch))

    def apply(self, batch: RecordBatch) -> None:
        if not len(batch):
            return
        decoded = self.codec.decode(batch)  # upserts and deletes in record order: the last change of a key wins
        rows = decoded.table
        if rows.num_rows:
            mask = rows.column("__delete").to_numpy(zero_copy_only=False)
            with self.lock:
                self.executor.update_table(rows.drop_columns(["__delete"]), tombstones=mask,
                                           partition=decoded.meta["ROWPARTITION"])  # fmt: skip

    def close(self) -> None:
        self.reader.close()
