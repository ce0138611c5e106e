"""What a window of the last readings per car costs: a call ``OVER (PARTITION BY car ROWS 19 PRECEDING)``
against the same call on single rows, and against the per-record loop such windows are usually built with.

All three run broker-free on the car simulator's readings (25 cars, 17 signals), in batches of 5,000 rows:

- (a) ``F(signals) FROM cars``: a stateless call on each row (no window);
- (b) ``F(signals) OVER (PARTITION BY car ROWS 19 PRECEDING)``: the windows of the batch built in one
  vectorised pass, the state (the last 19 rows of each car) updated in DuckDB, its changelog drained per batch;
- (c) a per-record loop: a ``deque(maxlen=20)`` per car, one window stacked per record (the reference).

``F`` sums its inputs, so the numbers are the window machinery, not a model.

    .venv/bin/python -m benchmarks.sequence_windows --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque

import numpy as np
import pyarrow as pa

from benchmarks.report import table, write_section
from streamml.demos.maintenance import FEATURES
from streamml.ingest.cars import CarFleet, ksql_spelling
from streamml.sql import SqlEngine
from streamml.sql.udf import udf

BATCH, WINDOW = 5_000, 20


def _engine() -> SqlEngine:
    engine = SqlEngine()
    columns = ", ".join(f"{f} DOUBLE" for f in FEATURES)
    engine.execute(f"CREATE STREAM cars (car VARCHAR KEY, {columns}) WITH (KAFKA_TOPIC='c', VALUE_FORMAT='JSON');")

    @udf(name="F", returns="DOUBLE", registry=engine.functions)
    def total(*columns: pa.Array) -> np.ndarray:
        arrays = [np.asarray(c.flatten() if pa.types.is_fixed_size_list(c.type) else c) for c in columns]
        return np.asarray(sum(a.reshape(len(columns[0]), -1).sum(axis=1) for a in arrays))

    return engine


def _sql(batches: list[pa.Table], sql: str) -> float:
    executor = _engine().plan(sql).executor()
    started = time.perf_counter()
    for batch in batches:
        executor.execute(batch)
        executor.changes(0)  # what a checkpoint writes to the changelog
    return sum(b.num_rows for b in batches) / (time.perf_counter() - started)


def _per_record(batches: list[pa.Table]) -> float:
    windows: dict[str, deque[np.ndarray]] = {}
    started = time.perf_counter()
    for batch in batches:
        cars = batch.column("car").to_pylist()
        values = np.column_stack([batch.column(f).to_numpy() for f in FEATURES])
        for car, row in zip(cars, values, strict=True):
            window = windows.setdefault(car, deque(maxlen=WINDOW))
            window.append(row)
            if len(window) == WINDOW:
                float(np.stack(window).sum())
    return sum(b.num_rows for b in batches) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    readings = ksql_spelling(CarFleet(25, seed=1).readings(args.readings // 25)).select(["car", *FEATURES])
    batches = [readings.slice(i, BATCH) for i in range(0, readings.num_rows, BATCH)]
    signals = ", ".join(FEATURES)
    runs: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    for _ in range(args.rounds):  # alternating, so a busy spell hits every row alike
        runs["a"].append(_sql(batches, f"SELECT car, F({signals}) AS s FROM cars;"))
        over = f"F({signals}) OVER (PARTITION BY car ROWS {WINDOW - 1} PRECEDING)"
        runs["b"].append(_sql(batches, f"SELECT car, {over} AS s FROM cars;"))
        runs["c"].append(_per_record(batches))
    rate = {k: statistics.median(v) for k, v in runs.items()}
    rows = [
        ["(a) F(signals), one row each", rate["a"], "1.00"],
        [f"(b) F(signals) OVER the last {WINDOW} readings per car", rate["b"], f"{rate['b'] / rate['a']:.2f}"],
        [f"(c) per-record loop, deque of {WINDOW} per car", rate["c"], f"{rate['c'] / rate['a']:.2f}"],
    ]
    body = table(["call", "readings/s (median)", "vs (a)"], rows)
    body += (
        f"\n\n(b) is {rate['b'] / rate['c']:.1f}x the per-record loop (c). {args.readings:,} readings of 25 cars, "
        f"{len(FEATURES)} signals, batches of {BATCH:,}, {args.rounds} alternating rounds; `F` sums its inputs."
    )
    print(body)
    if not args.no_write:
        write_section("sequence-windows", "Windows of the last readings per key (OVER)", body,
                      f"python -m benchmarks.sequence_windows --rounds {args.rounds}")  # fmt: skip


if __name__ == "__main__":
    main()
