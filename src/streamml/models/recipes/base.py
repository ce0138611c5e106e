"""The recipe contract and the data helpers every recipe shares (feature matrix, labels, splits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.errors import ModelError
from streamml.models.card import Lineage, ModelCard, OutputSpec, Parity
from streamml.models.stats import ReferenceStats

#: Parameters every recipe accepts besides its own.
COMMON_PARAMS: dict[str, Any] = {
    "features": None,  # feature columns; default: every numeric (or list) column except label/time
    "exclude": [],  # columns never used as features (keys, ids)
    "split": [0.7, 0.15, 0.15],  # train / validation / test fractions
    "time_column": None,  # split by time (oldest rows train) instead of at random
}


@dataclass(frozen=True)
class Splits:
    """Row indices of the train, validation and test parts of a table."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


@dataclass
class TrainedModel:
    """What a recipe returns: a checked ONNX artifact plus everything the model card needs."""

    onnx_bytes: bytes
    recipe: str
    framework: str
    framework_version: str | None
    features: list[str]
    label: str | None
    output: OutputSpec
    metrics: dict[str, Any]
    params: dict[str, Any]
    parity: Parity
    threshold: float | None = None
    threshold_rule: str | None = None
    plots: list[Path] = field(default_factory=list)

    def card(
        self,
        name: str,
        *,
        lineage: Lineage | None = None,
        reference: ReferenceStats | None = None,
        description: str | None = None,
    ) -> ModelCard:
        """A model card for this model (the registry fills in version, signature and plot paths)."""
        return ModelCard(
            name=name,
            description=description,
            framework=self.framework,
            framework_version=self.framework_version,
            recipe=self.recipe,
            params=self.params,
            features=self.features,
            label=self.label,
            lineage=lineage or Lineage(),
            metrics=self.metrics,
            threshold=self.threshold,
            threshold_rule=self.threshold_rule,
            output=self.output,
            reference=reference,
            parity=self.parity,
        )


@runtime_checkable
class Recipe(Protocol):
    """A way to train one kind of model from an Arrow table of features (and optionally a label column).

    ``train`` evaluates on held-out rows, writes PNG plots to ``plot_dir`` and returns a
    :class:`TrainedModel` whose artifact already passed its parity check. ``splits`` (row indices) are
    computed from ``params`` when not given.
    """

    name: str
    default_params: Mapping[str, Any]

    def train(
        self,
        features: pa.Table,
        label: str | None,
        params: Mapping[str, Any],
        seed: int,
        *,
        splits: Splits | None = None,
        plot_dir: Path | None = None,
    ) -> TrainedModel: ...


def resolve_params(recipe: Recipe, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults of ``recipe`` (and the common ones) overridden by ``params``; unknown keys are refused."""
    merged = {**COMMON_PARAMS, **dict(recipe.default_params)}
    unknown = sorted(set(params or {}) - set(merged))
    if unknown:
        raise ModelError(
            f"recipe '{recipe.name}' has no parameter(s) {', '.join(unknown)}",
            hint=f"known: {', '.join(sorted(merged))}",
        )
    return {**merged, **dict(params or {})}


def feature_columns(table: pa.Table, label: str | None, params: Mapping[str, Any]) -> list[str]:
    """The feature columns: ``params['features']`` or every numeric/list column but label, time, excluded."""
    if params.get("features"):
        columns = list(params["features"])
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ModelError(f"feature columns {missing} are not in the data", hint=f"have {table.column_names}")
        return columns
    skip = {label, params.get("time_column"), *params.get("exclude", [])}
    columns = [
        f.name
        for f in table.schema
        if f.name not in skip
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_list(f.type))
    ]
    if not columns:
        raise ModelError("the data has no numeric feature columns", hint=f"columns: {table.column_names}")
    return columns


def drop_incomplete(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """Rows where none of ``columns`` is null (NaN counts as null for floats)."""
    mask = None
    for name in columns:
        column = table.column(name)
        valid = pc.is_valid(column)
        if pa.types.is_floating(column.type):
            valid = pc.and_(valid, pc.invert(pc.is_nan(column)))
        mask = valid if mask is None else pc.and_(mask, valid)
    if mask is None or pc.all(mask).as_py():
        return table
    return table.filter(mask)


def feature_matrix(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """A float32 matrix ``[rows, features]``; a single list column becomes ``[rows, list length]``."""
    arrays = []
    for name in columns:
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            arrays.append(column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1))
        else:
            arrays.append(column.cast(pa.float64()).to_numpy(zero_copy_only=False).reshape(-1, 1))
    return np.ascontiguousarray(np.hstack(arrays), dtype=np.float32)


def label_array(table: pa.Table, label: str) -> np.ndarray:
    """Labels as strings (``1`` -> ``"1"``, ``1.0`` -> ``"1"``, ``True`` -> ``"true"``)."""
    if label not in table.column_names:
        raise ModelError(f"label column '{label}' is not in the data", hint=f"have {table.column_names}")
    column = table.column(label)
    if pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False)
        if np.all(values == np.round(values)):
            column = pa.chunked_array([pa.array(values.astype(np.int64))])
    return np.asarray(column.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)


def positive_class(labels: np.ndarray, requested: str | None = None) -> str:
    """The positive class of binary labels: ``requested``, else ``"1"``/``"true"``, else the rarer class."""
    classes, counts = np.unique(labels.astype(str), return_counts=True)
    if requested is not None:
        if str(requested) not in classes:
            raise ModelError(f"positive label '{requested}' does not occur", hint=f"labels: {list(classes)}")
        return str(requested)
    for candidate in ("1", "true", "True", "yes", "fraud", "anomaly"):
        if candidate in classes:
            return candidate
    return str(classes[counts.argmin()])


def split_indices(
    rows: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    *,
    seed: int = 0,
    stratify: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> Splits:
    """Split ``rows`` into train/validation/test.

    With ``order`` (e.g. a time column) the oldest rows train and the newest test; otherwise rows are
    shuffled with ``seed``. With ``stratify`` labels the split is made per class (so rare classes reach every
    part); combined with ``order``, each class is split by time on its own.
    """
    parts = np.asarray(fractions, dtype=np.float64)
    if parts.shape != (3,) or (parts < 0).any() or parts[0] <= 0:
        raise ModelError(f"split fractions must be three non-negative numbers, got {list(fractions)}")
    parts = parts / parts.sum()
    rng = np.random.default_rng(seed)
    members = [np.arange(rows)]
    if stratify is not None:
        codes = np.unique(np.asarray(stratify).astype(str), return_inverse=True)[1].reshape(-1)
        members = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)] if rows else members
    if order is not None:
        ordering = np.asarray(order)
        groups = [m[np.argsort(ordering[m], kind="stable")] for m in members]
    else:
        groups = [rng.permutation(m) for m in members]
    pieces: list[list[np.ndarray]] = [[], [], []]
    for group in groups:
        cut = np.round(np.cumsum(parts)[:2] * len(group)).astype(int)
        for i, piece in enumerate(np.split(group, cut)):
            pieces[i].append(piece)
    train, validation, test = (np.sort(np.concatenate(p)) if p else np.empty(0, int) for p in pieces)
    return Splits(train=train, validation=validation, test=test)


def prepare(
    table: pa.Table, label: str | None, params: Mapping[str, Any], seed: int, splits: Splits | None
) -> tuple[pa.Table, list[str], np.ndarray, np.ndarray | None, Splits]:
    """Common preparation: feature columns, complete rows, matrix, labels and (computed) splits."""
    columns = feature_columns(table, label, params)
    table = drop_incomplete(table, columns + ([label] if label else []))
    if table.num_rows < 10:
        raise ModelError(f"only {table.num_rows} complete rows to train on")
    x = feature_matrix(table, columns)
    y = label_array(table, label) if label else None
    if splits is None:
        time_column = params.get("time_column")
        order = table.column(time_column).to_numpy(zero_copy_only=False) if time_column else None
        splits = split_indices(table.num_rows, params["split"], seed=seed, stratify=y, order=order)
    return table, columns, x, y, splits
