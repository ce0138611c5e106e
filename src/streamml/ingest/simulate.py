"""Seeded, vectorised simulators of the event streams the demos use.

``transactions`` follows the public credit-card fraud dataset's layout (Time, V1..V28 as PCA-like standardised
components, Amount, Class) plus the extended demo's Id, Timestamp and User. Frauds differ the way they do in the
public data: several components are shifted (V14, V12, V10, V17, V3 down; V4, V11, V2 up), their spread is
wider, and amounts are skewed towards small test charges and a long tail. A share of records is unlabelled
(empty Class), as in the demo CSV.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: component -> shift of the fraud class, in standard deviations of the normal class
FRAUD_SHIFTS = {1: -1.6, 2: 1.2, 3: -2.4, 4: 1.9, 5: -0.8, 7: -1.8, 9: -1.1, 10: -2.6, 11: 1.7, 12: -2.8,
                14: -3.0, 16: -1.9, 17: -2.7, 18: -1.0, 19: 0.4, 21: 0.5}  # fmt: skip
TRANSACTION_COLUMNS = ["Id", "Timestamp", "User", "Time"] + [f"V{i}" for i in range(1, 29)] + ["Amount", "Class"]


def transaction_schema() -> pa.Schema:
    """Arrow schema of :func:`transactions`, matching the demo's DELIMITED source stream."""
    return pa.schema(
        [("Id", pa.int64()), ("Timestamp", pa.string()), ("User", pa.string()), ("Time", pa.int32())]
        + [(f"V{i}", pa.float64()) for i in range(1, 29)]
        + [("Amount", pa.float64()), ("Class", pa.string())]
    )


def transactions(
    n: int,
    *,
    fraud_rate: float = 0.002,
    unlabelled_rate: float = 0.01,
    seed: int = 42,
    first_id: int = 0,
    start: datetime | None = None,
    users: int = 5_000,
) -> pa.Table:
    """``n`` credit-card-like transactions as an Arrow table (see the module docstring).

    >>> t = transactions(1000, fraud_rate=0.1, seed=1)
    >>> t.num_rows, round(t.column("Class").to_pylist().count("1") / 1000, 1)
    (1000, 0.1)
    """
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    fraud = rng.random(n) < fraud_rate
    # PCA-like components: variance decreasing with the index, heavy tails as in the public data
    scale = np.linspace(1.9, 0.3, 28)
    v = rng.standard_t(df=10, size=(n, 28)) * scale * 0.8
    k = int(fraud.sum())
    if k:
        shift = np.zeros(28)
        for comp, s in FRAUD_SHIFTS.items():
            shift[comp - 1] = s
        v[fraud] = v[fraud] * 1.4 + 0.6 * shift * scale
    amount = np.round(np.exp(rng.normal(3.3, 1.2, n)), 2)
    if k:
        small = rng.random(k) < 0.55
        amount[fraud] = np.where(
            small, np.round(rng.uniform(0.5, 5.0, k), 2), np.round(np.exp(rng.normal(5.0, 1.3, k)), 2)
        )
    seconds = np.sort(rng.uniform(0, max(n, 1) * 1.7, n)).astype(np.int32) + int(first_id * 1.7)
    origin = (start or datetime(2026, 1, 1, tzinfo=UTC)).timestamp()
    stamps = pa.array(int(origin) + seconds.astype(np.int64)).cast(pa.timestamp("s"))
    timestamp_text = pc.strftime(stamps, format="%Y-%m-%d %H:%M:%S")
    user_ids = rng.integers(0, users, n)
    label = np.where(fraud, "1", "0").astype(object)
    label[rng.random(n) < unlabelled_rate] = None
    columns: dict[str, pa.Array] = {
        "Id": pa.array(ids),
        "Timestamp": timestamp_text,
        "User": pc.binary_join_element_wise("user", pc.cast(pa.array(user_ids), pa.string()), ""),
        "Time": pa.array(seconds),
    }
    for i in range(28):
        columns[f"V{i + 1}"] = pa.array(np.round(v[:, i], 6))
    columns["Amount"] = pa.array(amount)
    columns["Class"] = pa.array(label, pa.string())
    return pa.table(columns, schema=transaction_schema())
