"""Reference statistics of features and outputs, kept on the model card for drift detection."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import TypeAlias

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict

#: the values of one column: a NumPy array or anything it takes, or an Arrow array
Column: TypeAlias = ArrayLike | pa.Array | pa.ChunkedArray

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


def category_codes(values: Column) -> tuple[np.ndarray, np.ndarray]:
    """The column as integer codes (-1 for a null) into its sorted distinct category keys.

    Hash-encodes with Arrow, so only the distinct values are turned into keys (:func:`category_keys`);
    an object array Arrow cannot type (strings mixed with numbers) is keyed value by value.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    arrow: pa.Array | None = values if isinstance(values, pa.Array) else None
    array = np.empty(0)
    if arrow is None:
        array = np.asarray(values).ravel()
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
            arrow = pa.array(array, from_pandas=True)
    if arrow is not None:
        encoded = arrow if pa.types.is_dictionary(arrow.type) else arrow.dictionary_encode()
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
        keys, nulls = category_keys(encoded.dictionary.to_numpy(zero_copy_only=False))
    else:
        keys, nulls = category_keys(array)
        codes = np.arange(keys.size, dtype=np.intp)
    names, remap = np.unique(keys, return_inverse=True)
    remap = np.where(nulls, -1, remap.ravel())
    if remap.size == 0:
        return np.full(codes.size, -1, dtype=np.intp), names[:0]
    present = np.flatnonzero(np.bincount(remap[remap >= 0], minlength=names.size))
    if present.size < names.size:  # the key of a null ("") is no category
        renumber = np.full(names.size, -1, dtype=np.intp)
        renumber[present] = np.arange(present.size)
        names, remap = names[present], np.where(remap >= 0, renumber[remap], -1)
    return np.where(codes >= 0, remap[codes], -1), names


def category_stats(values: Column) -> ColumnStats:
    """Statistics of a categorical column: how often each category occurs (nulls counted apart)."""
    codes, names = category_codes(values)
    counts = np.bincount(codes[codes >= 0], minlength=names.size)
    nulls = np.sum(codes < 0)
    return ColumnStats(
        count=int(counts.sum()),
        null_count=int(nulls),
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
