"""Replaying line-oriented files (CSV, JSON lines) into a topic in batches, at a rate, optionally forever."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from streamml.ingest.records import LineCodec
from streamml.kafka.producer import Producer


@dataclass
class ReplayStats:
    """What a replay did."""

    records: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class RateLimiter:
    """Paces batches so that on average no more than ``rate`` records per second pass (no limit if None)."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._start = clock()
        self._count = 0

    def chunk_size(self, default: int) -> int:
        """A batch size that keeps pacing smooth: about 20 batches a second under a limit."""
        if not self.rate:
            return default
        return max(1, min(default, int(self.rate / 20)))

    def wait(self, n: int) -> None:
        """Account for ``n`` more records, sleeping until they are due."""
        self._count += n
        if not self.rate:
            return
        due = self._start + self._count / self.rate
        delay = due - self._clock()
        if delay > 0:
            time.sleep(delay)


def line_batches(stream: BinaryIO, size: int, skip: int = 0) -> Iterator[tuple[int, list[bytes]]]:
    """Batches of non-empty lines (without line endings) with the 1-based line number of the first."""
    batch: list[bytes] = []
    first = 0
    for number, raw in enumerate(stream, start=1):
        if number <= skip:
            continue
        line = raw.rstrip(b"\r\n")
        if not line:
            continue
        if not batch:
            first = number
        batch.append(line)
        if len(batch) >= size:
            yield first, batch
            batch = []
    if batch:
        yield first, batch


def replay_lines(
    producer: Producer,
    topic: str,
    batches: Iterable[tuple[int, list[bytes]]],
    codec: LineCodec,
    limiter: RateLimiter | None = None,
    on_batch: Callable[[int], None] | None = None,
    limit: int | None = None,
) -> ReplayStats:
    """Validate, key and produce every batch; stop after ``limit`` records. Flushes before returning."""
    stats = ReplayStats()
    start = time.monotonic()
    for first, lines in batches:
        room = len(lines) if limit is None else limit - stats.records
        values, keys = codec.encode(lines[:room], first)
        producer.produce_batch(topic, values, keys)
        stats.records += len(values)
        stats.bytes += sum(map(len, values))
        if limiter is not None:
            limiter.wait(len(values))
        if on_batch is not None:
            on_batch(len(values))
        if limit is not None and stats.records >= limit:
            break
    producer.flush()
    stats.seconds = time.monotonic() - start
    return stats
