"""History read throughput: a stream of 30-double JSON records through ``SELECT *``, next to a bare consume.

Produces ``--records`` records to a fresh topic of ``--partitions`` partitions on the local broker (started
on free ports in a temporary folder unless STREAMML_BOOTSTRAP is set), then, ``--rounds`` times each:

- bare consume: a ``BatchConsumer`` reading every record's value, nothing else;
- history read: ``read_history`` (decode with the stream's format, run the SQL plan, build one table);
- snapshot hit: the same call again, answered from the Parquet snapshot.

    .venv/bin/python -m benchmarks.history_read --records 300000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import numpy as np
import pyarrow as pa

from benchmarks.cluster import bench_settings
from benchmarks.report import table, write_section
from streamml.config import Settings
from streamml.formats import get_format
from streamml.kafka import Admin, BatchConsumer, Producer, client_config
from streamml.runtime.history import read_history
from streamml.sql import SqlEngine

COLUMNS = [f"V{i}" for i in range(1, 29)] + ["Time", "Amount"]


def records(n: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    table = pa.table({name: np.round(rng.standard_normal(n) * 10, 6) for name in COLUMNS})
    return get_format("JSON", table.schema).encode(table)


def bare_consume(config: dict, topic: str, n: int) -> float:
    started = time.perf_counter()
    seen = 0
    with BatchConsumer(config, [topic], isolation="read_uncommitted") as consumer:
        while seen < n:
            seen += len(consumer.poll_batch(20_000, 1.0).values)
    return time.perf_counter() - started


def history(settings: Settings, engine: SqlEngine, cache: bool) -> tuple[float, int]:
    started = time.perf_counter()
    result = read_history(settings, "bench", engine=engine, cache=cache)
    return time.perf_counter() - started, result.table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()

    with bench_settings() as settings:
        config = client_config(settings)
        topic = f"bench-history-{uuid.uuid4().hex[:8]}"
        Admin(config).create_topic(topic, partitions=args.partitions)
        values = records(args.records)
        size = sum(map(len, values)) / len(values)
        with Producer(config) as producer:
            producer.produce_batch(topic, values)
        engine = SqlEngine.with_plugins()
        columns = ", ".join(f"{c} DOUBLE" for c in COLUMNS)
        engine.execute(f"CREATE STREAM bench ({columns}) WITH (KAFKA_TOPIC='{topic}', VALUE_FORMAT='JSON');")

        bare, read, hit = [], [], []
        for _ in range(args.rounds):
            bare.append(bare_consume(config, topic, args.records))
            seconds, rows = history(settings, engine, cache=False)
            assert rows == args.records, rows
            read.append(seconds)
        history(settings, engine, cache=True)  # writes the snapshot
        for _ in range(args.rounds):
            hit.append(history(settings, engine, cache=True)[0])

    n = args.records
    print(
        f"{n:,} JSON records of 30 doubles (~{size:.0f} bytes), {args.partitions} partitions, median of {args.rounds}"
    )
    for label, times in (("bare consume", bare), ("history read (SQL)", read), ("snapshot hit", hit)):
        median = statistics.median(times)
        print(f"  {label:<20} {n / median:>12,.0f} records/s  ({median:.2f} s)")
    ratio = statistics.median(bare) / statistics.median(read)
    print(f"  history read / bare consume: {ratio:.0%}")
    if not args.no_write:
        rows = [[label, n / statistics.median(times)] for label, times in
                (("bare consume (BatchConsumer, values only)", bare), ("history read through SQL", read),
                 ("history read, Parquet snapshot hit", hit))]  # fmt: skip
        body = table(["read", "records/s"], rows) + (
            f"\n\n{n:,} JSON records of 30 doubles (~{size:.0f} bytes) in {args.partitions} partitions, median of "
            f"{args.rounds}; the history read decodes with the production codec and runs `SELECT *` through the "
            f"SQL engine into one Arrow table: {ratio:.0%} of a bare consume. Target: 200,000 records/s."
        )
        write_section("history-read", "Training data: reading a stream's history", body,
                      f"python -m benchmarks.history_read --records {n} --rounds {args.rounds}")  # fmt: skip


if __name__ == "__main__":
    main()
