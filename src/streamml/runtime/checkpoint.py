"""The commit order of a persistent query, in one object that can be tested without a broker.

A checkpoint collects what a query did since its last commit (records produced, partitions whose state
changed, offsets consumed) and commits it in this order:

1. outputs and dead letters: produced as the batches are processed (``produce``), inside the transaction;
2. state: the changes of the partitions it touched, to the changelog, inside the same transaction;
3. offsets: the next offset of every partition consumed, sent to the transaction (exactly-once) or
   committed to the group after a flush (at-least-once);
4. commit.

When a step fails, the exactly-once checkpoint aborts the transaction and rewinds: the consumer goes back to
the committed offsets and the state is reloaded from the changelog, so the records are processed again and
nothing of the aborted attempt is visible to read_committed readers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

Offsets = Mapping[tuple[str, int], int]


class Output(Protocol):
    """Where records go: :class:`streamml.kafka.Producer` or :class:`~streamml.kafka.TransactionalProducer`."""

    def produce_batch(
        self,
        topic: str,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        *,
        headers: Any = None,
        partitions: Sequence[int] | None = None,
        timestamps: Sequence[int] | None = None,
    ) -> int: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


class TransactionalOutput(Output, Protocol):
    """An output whose records, and the consumed offsets, commit atomically."""

    in_transaction: bool

    def begin(self) -> None: ...

    def send_offsets(self, consumer: Any, offsets: Offsets | None = None) -> None: ...

    def commit(self, timeout_s: float | None = None) -> None: ...

    def abort(self, timeout_s: float | None = None) -> None: ...


class Input(Protocol):
    """The consumer the offsets belong to (:class:`streamml.kafka.BatchConsumer`)."""

    def commit(self, offsets: Offsets | None = None) -> None: ...

    def committed_offsets(self) -> dict[tuple[str, int], int]: ...

    def rewind(self, offsets: Offsets) -> None: ...


class State(Protocol):
    """The query's state: written to its changelog in the transaction, reloaded after an abort."""

    def write(self, output: Output, partitions: set[int]) -> None: ...

    def reload(self, partitions: set[int]) -> None: ...


class Checkpoint:
    """Pending offsets and touched state since the last commit of one query, and the order they commit in."""

    def __init__(self, output: Output, consumer: Input, state: State | None = None, *, exactly_once: bool) -> None:
        self.output = output
        self.consumer = consumer
        self.state = state
        self.exactly_once = exactly_once
        self.pending: dict[tuple[str, int], int] = {}
        self.touched: set[int] = set()
        self.started = 0.0  # when the open transaction began (monotonic)
        self.commits = 0
        self.rewinds = 0

    @property
    def transactional(self) -> TransactionalOutput | None:
        return self.output if self.exactly_once else None  # type: ignore[return-value]

    def begin(self) -> None:
        """Open a transaction unless one is open (exactly-once only)."""
        txn = self.transactional
        if txn is not None and not txn.in_transaction:
            txn.begin()
            self.started = time.monotonic()

    def produce(
        self, topic: str, values: Sequence[bytes | None], keys: Sequence[bytes | None] | None, **kw: Any
    ) -> None:
        """Step 1: queue output records or dead letters in the open transaction."""
        if values:
            self.begin()
            self.output.produce_batch(topic, values, keys, **kw)

    def processed(self, offsets: Offsets, partitions: Iterable[int] = ()) -> None:
        """Record a processed batch: the next offset per partition, and the input partitions whose state changed."""
        self.begin()
        self.pending.update(offsets)
        self.touched.update(partitions)

    def due(self, caught_up: bool, interval_s: float) -> bool:
        """Whether to commit now: at once when caught up (latency), else once per interval (throughput)."""
        return bool(self.pending) and (caught_up or time.monotonic() - self.started >= interval_s)

    def commit(self) -> None:
        """Steps 2-4: state, offsets, commit. Raises when a step fails, after :meth:`rewind` when exactly-once."""
        if not self.pending:
            return
        try:
            if self.state is not None and self.touched:
                self.begin()
                self.state.write(self.output, self.touched)
            txn = self.transactional
            if txn is not None:
                txn.send_offsets(self.consumer, self.pending)
                txn.commit()
            else:
                self.output.flush()
                self.consumer.commit(self.pending)
        except Exception:
            if self.exactly_once:
                self.rewind()
            raise
        self.commits += 1
        self.pending.clear()
        self.touched.clear()

    def rewind(self) -> None:
        """Abort the open transaction; back to the committed offsets and the committed state."""
        txn = self.transactional
        if txn is not None:
            txn.abort()
        self.pending.clear()
        self.touched.clear()
        committed = self.consumer.committed_offsets()
        self.consumer.rewind(committed)
        if self.state is not None:
            self.state.reload({p for _, p in committed})
        self.rewinds += 1
