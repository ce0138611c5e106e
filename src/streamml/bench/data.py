"""Inputs and outputs of the benchmark scenarios: the model, the input topics, the completeness check."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streamml.formats import get_format
from streamml.ingest.simulate import transactions
from streamml.kafka import Admin, BatchConsumer, Producer

FEATURES = ["Time"] + [f"V{i}" for i in range(1, 29)] + ["Amount"]
#: the input stream's columns, as a CREATE STREAM column list
COLUMNS = "Id BIGINT, User VARCHAR, " + ", ".join(f"{f} DOUBLE" for f in FEATURES) + ", Class VARCHAR"
PARTITIONS = 2
KEYS = 10_000


def input_table(n: int, seed: int = 7, first_id: int = 0) -> pa.Table:
    """``n`` simulated transactions over 10,000 users, with the columns of :data:`COLUMNS`."""
    table = transactions(n, fraud_rate=0.01, seed=seed, first_id=first_id, users=KEYS)
    table = table.select(["Id", "User", *FEATURES, "Class"])
    return table.set_column(2, "Time", table.column("Time").cast(pa.float64()))


def encode(table: pa.Table) -> tuple[list[bytes], list[bytes]]:
    """JSON values and keys (the user) of ``table``'s records."""
    values = get_format("JSON", table.schema).encode(table)
    keys = [u.encode() for u in table.column("User").to_pylist()]
    return values, keys


def features(table: pa.Table) -> np.ndarray:
    """The model's input: a (rows, 30) float32 matrix."""
    return np.column_stack([table.column(f).to_numpy() for f in FEATURES]).astype(np.float32)


@dataclass(frozen=True)
class ModelFiles:
    """A registry holding ``fraud`` (promoted) and the same artifact as a plain file."""

    registry_url: str
    onnx_path: Path


def train_model(root: Path | None = None) -> ModelFiles:
    """Train the fraud autoencoder (30-14-7-14-30) into a fresh registry under ``root``."""
    from streamml.models.registry import Registry
    from streamml.models.training import train_table

    folder = Path(tempfile.mkdtemp(prefix="streamml-bench-", dir=root))
    registry = Registry(str(folder / "registry"))
    data = input_table(4000, seed=3).drop_columns(["Id", "User"]).filter(pc.is_valid(pc.field("Class")))
    train_table(
        "autoencoder", data, "Class", {"hidden": [14, 7, 14], "epochs": 30}, name="fraud", registry=registry, seed=1
    )
    registry.promote("fraud", 1)
    path = folder / "fraud.onnx"
    path.write_bytes(registry.get("fraud").artifact())
    return ModelFiles(registry.root_url, path)


def fill_topic(config: dict[str, Any], admin: Admin, topic: str, table: pa.Table) -> None:
    """Create ``topic`` (2 partitions) and write ``table`` into it as keyed JSON records."""
    admin.create_topic(topic, partitions=PARTITIONS)
    values, keys = encode(table)
    with Producer(config) as producer:
        producer.produce_batch(topic, values, keys)


def output_ids(values: Iterable[bytes | None]) -> list[int]:
    """The ``Id`` (or SQL's upper-cased ``ID``) of each JSON output value."""
    ids = []
    for value in values:
        if value is None:
            continue
        row = orjson.loads(value)
        ids.append(int(row["Id"] if "Id" in row else row["ID"]))
    return ids


def read_topic(config: dict[str, Any], topic: str, timeout_s: float = 60.0) -> list[tuple[bytes | None, bytes | None]]:
    """Every committed (key, value) of ``topic``, read ``read_committed`` to the end."""
    rows: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout_s
    with BatchConsumer(config, [topic], isolation="read_committed", track_end=True) as reader:
        while not reader.reached_end():
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading '{topic}' did not reach its end in {timeout_s:.0f} s")
            batch = reader.poll_batch(50_000, 0.2)
            rows += list(zip(batch.keys, batch.values, strict=True))
    return rows


def check_ids(ids: list[int], expected: Iterable[int]) -> str | None:
    """None when ``ids`` holds every expected Id exactly once; else what is wrong."""
    want = set(expected)
    counts = Counter(ids)
    missing = len(want - counts.keys())
    extra = len(counts.keys() - want)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    if missing or extra or duplicates:
        return f"output incomplete: {missing} Ids missing, {duplicates} duplicated, {extra} unexpected"
    return None


def check_counts(rows: list[tuple[bytes | None, bytes | None]], total: int, column: str = "N") -> str | None:
    """For a windowed count: None when the latest count per (key, window) sums to ``total``."""
    latest: dict[bytes | None, int] = {}
    for key, value in rows:
        if value is not None:
            latest[key] = int(orjson.loads(value)[column])
    counted = sum(latest.values())
    if counted != total:
        return f"windowed counts sum to {counted:,}, expected {total:,}"
    return None
