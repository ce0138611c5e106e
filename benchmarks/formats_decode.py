"""Decode and encode throughput of every format, in records per second.

Records are 30 doubles (the fraud-detection shape, ~800 bytes as JSON) unless the row says otherwise; batches
of ``--batch`` records, best of ``--repeat`` passes over ``--rows`` records. Run:

    .venv/bin/python benchmarks/formats_decode.py [--rows 100000] [--batch 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.formats import AvroFormat, DelimitedFormat, Format, JsonFormat, KafkaFormat, SchemaRegistryClient


class _InMemoryRegistry(SchemaRegistryClient):
    """Registry stand-in so the wire-format row measures the format, not HTTP."""

    def __init__(self) -> None:
        super().__init__("memory://registry")
        self._schemas: dict[int, dict[str, Any]] = {}

    def register(self, subject: str, schema: dict[str, Any] | str) -> int:
        assert isinstance(schema, dict)
        self._schemas[1] = schema
        return 1

    def get_schema(self, schema_id: int) -> dict[str, Any]:
        return self._schemas[schema_id]


def _doubles(rows: int, null_share: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(7)
    names = [f"V{i}" for i in range(1, 29)] + ["Time", "Amount"]
    columns = []
    for _ in names:
        data = rng.normal(size=rows) * 10
        mask = rng.random(rows) < null_share if null_share else None
        columns.append(pa.array(data, mask=mask))
    return pa.table(columns, names=names)


def _mixed(rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "user": pa.array([f"user-{i % 977}" for i in range(rows)]),
            "amount": pa.array(rng.uniform(0, 500, rows)),
            "items": pa.array(rng.integers(1, 9, rows).astype(np.int32)),
            "fraud": pa.array(rng.random(rows) < 0.01),
        }
    )


def _best(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _measure(fmt: Format, table: pa.Table, batch: int, repeat: int) -> tuple[float, float, float]:
    slices = [table.slice(i, batch) for i in range(0, table.num_rows, batch)]
    encoded: list[list[bytes]] = [fmt.encode(s) for s in slices]
    for values in encoded[:1]:
        decoded = fmt.decode(values)
        assert decoded.all_ok, decoded.failures[:3]

    def encode_all() -> None:
        for s in slices:
            fmt.encode(s)

    def decode_all() -> None:
        for values in encoded:
            fmt.decode(values)

    n = table.num_rows
    size = sum(len(v) for values in encoded for v in values) / n
    return n / _best(decode_all, repeat), n / _best(encode_all, repeat), size


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    doubles = _doubles(args.rows)
    sparse = _doubles(args.rows, null_share=0.01)
    mixed = _mixed(args.rows)
    single = pa.table({"v": doubles.column(0)})
    cases: list[tuple[str, Format, pa.Table]] = [
        ("JSON", JsonFormat(doubles.schema), doubles),
        ("JSON (mixed types)", JsonFormat(mixed.schema), mixed),
        ("DELIMITED", DelimitedFormat(doubles.schema), doubles),
        ("DELIMITED (mixed types)", DelimitedFormat(mixed.schema), mixed),
        ("AVRO (plain)", AvroFormat(doubles.schema), doubles),
        ("AVRO (plain, 1% nulls)", AvroFormat(sparse.schema), sparse),
        ("AVRO (mixed types)", AvroFormat(mixed.schema), mixed),
        ("AVRO (Confluent wire)", AvroFormat(doubles.schema, registry=_InMemoryRegistry(), subject="b-value"), doubles),
        ("KAFKA (one DOUBLE)", KafkaFormat(single.schema), single),
    ]
    header = f"{'format':<26} {'bytes/rec':>9} {'decode rec/s':>13} {'encode rec/s':>13}"
    print(f"{args.rows:,} records, batches of {args.batch:,}, best of {args.repeat}")
    print(header)
    print("-" * len(header))
    for name, fmt, table in cases:
        decode_rate, encode_rate, size = _measure(fmt, table, args.batch, args.repeat)
        print(f"{name:<26} {size:>9.0f} {decode_rate:>13,.0f} {encode_rate:>13,.0f}")


if __name__ == "__main__":
    main()
