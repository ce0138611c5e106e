"""Streaming simulated tables (transactions, census) into a topic or a CSV file, in seeded chunks, at a rate."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from streamml.formats import get_format
from streamml.ingest.replay import RateLimiter
from streamml.ingest.simulate import transactions
from streamml.kafka.producer import Producer


def transaction_chunks(
    count: int | None, *, fraud_rate: float, seed: int, chunk: int = 10_000, first_id: int = 0
) -> Iterator[pa.Table]:
    """Successive tables of simulated transactions (``count`` None: without end); each chunk seeded."""
    produced = 0
    for index in itertools.count():
        if count is not None and produced >= count:
            return
        n = chunk if count is None else min(chunk, count - produced)
        yield transactions(n, fraud_rate=fraud_rate, seed=seed + index, first_id=first_id + produced)
        produced += n


def write_csv(tables: Iterator[pa.Table], path: Path) -> int:
    """Write the chunks as one CSV file with a header, as the demo's CSV; returns the row count."""
    rows = 0
    writer: pacsv.CSVWriter | None = None
    with path.open("wb") as sink:
        for table in tables:
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema, write_options=pacsv.WriteOptions(quoting_style="needed"))
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
    return rows


def stream_transactions(
    producer: Producer,
    topic: str,
    tables: Iterator[pa.Table],
    value_format: str = "DELIMITED",
    rate: float | None = None,
    on_chunk: Callable[[int], None] | None = None,
    key: str | None = "Id",
) -> int:
    """Produce the chunks to ``topic`` keyed by column ``key`` (None: no key), paced at ``rate`` records/s;
    returns the count."""
    limiter = RateLimiter(rate)
    size = limiter.chunk_size(10_000)
    fmt = None
    sent = 0
    for table in tables:
        for start in range(0, table.num_rows, size):
            part = table.slice(start, size)
            fmt = fmt or get_format(value_format, part.schema)
            keys = [str(i).encode() for i in part.column(key).to_pylist()] if key else None
            producer.produce_batch(topic, fmt.encode(part), keys)
            sent += part.num_rows
            limiter.wait(part.num_rows)
            if on_chunk is not None:
                on_chunk(part.num_rows)
    producer.flush()
    return sent
