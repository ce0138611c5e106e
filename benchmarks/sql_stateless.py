"""Micro-benchmark: a stateless filter + projection over 30-double records in 10k-row batches.

Run: ``python benchmarks/sql_stateless.py [--rows 10000] [--batches 100]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from streamml.sql import SqlEngine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    columns = ", ".join(f"V{i} DOUBLE" for i in range(1, 29))
    engine = SqlEngine()
    engine.execute(
        f"CREATE STREAM tx (Time INT, {columns}, Amount DOUBLE, Class VARCHAR) "
        "WITH (KAFKA_TOPIC='tx', VALUE_FORMAT='JSON');"
    )
    rng = np.random.default_rng(42)
    data: dict[str, object] = {f"V{i}": rng.normal(size=args.rows) for i in range(1, 29)}
    data["TIME"] = np.arange(args.rows, dtype=np.int32)
    data["AMOUNT"] = rng.exponential(50.0, size=args.rows)
    data["CLASS"] = pa.array(np.where(rng.random(args.rows) < 0.01, "1", "0"))
    batch = pa.table(data)
    meta = {"ROWTIME": np.arange(args.rows, dtype=np.int64)}
    projections = ", ".join(f"V{i}" for i in range(1, 29))
    queries = {
        "filter+projection": f"SELECT Time, {projections}, Amount FROM tx WHERE Amount > 10 AND Class IS NOT NULL;",
        "functions+cast": "SELECT MASK_LEFT(Class, 1) AS c, CAST(Class AS INT) AS k, ROUND(Amount, 2) AS a, "
        "V1 * 2 + V2 AS s FROM tx WHERE V3 BETWEEN -1 AND 1;",
        "partition by": f"SELECT Class, {projections} FROM tx PARTITION BY Class;",
    }
    for name, sql in queries.items():
        executor = engine.plan(sql).executor()
        executor.execute(batch, meta)  # warm-up
        start = time.perf_counter()
        out = 0
        for _ in range(args.batches):
            out += executor.execute(batch, meta).table.num_rows
        elapsed = time.perf_counter() - start
        rate = args.rows * args.batches / elapsed
        print(
            f"{name:20s} {rate / 1e6:6.2f} M rows/s  ({elapsed / args.batches * 1e3:.2f} ms per batch, {out} rows out)"
        )


if __name__ == "__main__":
    main()
