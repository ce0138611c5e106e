"""Reference statistics of features and outputs, kept on the model card for drift detection."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


class ColumnStats(BaseModel):
    """Summary of one column: moments, quantiles and a histogram (``len(edges) == len(counts)+1``) of a numeric
    column, or the count of each category of a categorical one (``categories``, keys as :func:`category_keys`)."""

    model_config = ConfigDict(frozen=True)

    count: int
    null_count: int = 0
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = {}
    bin_edges: list[float] = []
    bin_counts: list[int] = []
    categories: dict[str, int] = {}


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


def category_keys(values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Each value as a category key, and the null mask (None, NaN).

    Strings are kept as they are, integral numbers lose their fraction (``1``, ``1.0`` and ``"1"`` are all
    ``"1"``), other numbers are written as Python writes floats, booleans become ``"true"`` / ``"false"``.
    A null's key is ``""``.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        array = array.ravel()
    kind = array.dtype.kind
    if kind == "b":
        return np.where(array, "true", "false").astype(np.str_), np.zeros(array.size, dtype=bool)
    if kind in "iu":
        return array.astype(np.str_), np.zeros(array.size, dtype=bool)
    if kind == "f":
        nulls = np.isnan(array)
        integral = ~nulls & np.isfinite(array) & (array == np.trunc(array)) & (np.abs(array) < 2.0**63)
        keys = array.astype(np.str_)
        keys[integral] = array[integral].astype(np.int64).astype(np.str_)
        keys[nulls] = ""
        return keys, nulls
    if kind in "USTa":
        return array.astype(np.str_), np.zeros(array.size, dtype=bool)
    keyed = np.frompyfunc(_category_key, 1, 1)(array) if array.size else np.empty(0, dtype=object)
    nulls = np.fromiter((k is None for k in keyed), dtype=bool, count=array.size)
    keyed[nulls] = ""
    return keyed.astype(np.str_), nulls


def _category_key(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return None
        if math.isfinite(number) and number == math.trunc(number) and abs(number) < 2.0**63:
            return str(int(number))
        return repr(number)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def category_stats(values: ArrayLike) -> ColumnStats:
    """Statistics of a categorical column: how often each category occurs (nulls counted apart)."""
    keys, nulls = category_keys(values)
    names, counts = np.unique(keys[~nulls], return_counts=True)
    return ColumnStats(
        count=int(counts.sum()),
        null_count=int(nulls.sum()),
        categories={str(n): int(c) for n, c in zip(names, counts, strict=True)},
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
