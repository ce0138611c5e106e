"""Reference statistics of features and outputs, kept on the model card for drift detection."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


class ColumnStats(BaseModel):
    """Summary of one numeric column: moments, quantiles and a histogram (``len(edges) == len(counts)+1``)."""

    model_config = ConfigDict(frozen=True)

    count: int
    null_count: int = 0
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = {}
    bin_edges: list[float] = []
    bin_counts: list[int] = []


class ReferenceStats(BaseModel):
    """Statistics of every input feature and of each scalar model output on the reference data."""

    model_config = ConfigDict(frozen=True)

    rows: int = 0
    features: dict[str, ColumnStats] = {}
    outputs: dict[str, ColumnStats] = {}


def column_stats(values: np.ndarray, bins: int = 20) -> ColumnStats:
    """Statistics of a 1-D numeric array; NaN counts as null."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    nulls = int(values.size - finite.size)
    if finite.size == 0:
        return ColumnStats(count=0, null_count=nulls)
    qs = np.quantile(finite, QUANTILES)
    low, high = float(qs[0]), float(qs[-1])
    if high <= low:
        high = low + 1.0
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    return ColumnStats(
        count=int(finite.size),
        null_count=nulls,
        mean=float(finite.mean()),
        std=float(finite.std()),
        quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
        bin_edges=[float(e) for e in edges],
        bin_counts=[int(c) for c in counts],
    )


def reference_stats(
    features: np.ndarray,
    names: list[str],
    outputs: Mapping[str, np.ndarray] | None = None,
    bins: int = 20,
) -> ReferenceStats:
    """Statistics of each column of the 2-D ``features`` and of each numeric 1-D output."""
    matrix = np.asarray(features, dtype=np.float64)
    matrix = matrix.reshape(matrix.shape[0], -1)
    if matrix.shape[1] != len(names):
        names = [f"x{i}" for i in range(matrix.shape[1])]
    feature_stats = {name: column_stats(matrix[:, i], bins) for i, name in enumerate(names)}
    output_stats = {
        name: column_stats(values, bins)
        for name, values in (outputs or {}).items()
        if np.asarray(values).dtype.kind in "fiub" and np.asarray(values).ndim == 1
    }
    return ReferenceStats(rows=int(matrix.shape[0]), features=feature_stats, outputs=output_stats)
