"""Train a model from an Arrow table and register it: the one call behind ``streamml model train``.

The caller (reading a topic snapshot through the production SQL) passes the table and its lineage::

    version = train_table("autoencoder", table, "Class", {}, name="fraud", registry=Registry(),
                          lineage=Lineage(source="transactions", sql="SELECT ..."), seed=7)
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.errors import ModelError
from streamml.models.card import Lineage, ModelCard
from streamml.models.recipes import Recipe, TrainedModel, get_recipe, resolve_params
from streamml.models.recipes.base import drop_incomplete, feature_matrix, prepare
from streamml.models.registry import ModelVersion, Registry
from streamml.models.runtime import OnnxModel
from streamml.models.stats import ReferenceStats, category_stats, reference_stats

logger = logging.getLogger(__name__)

#: At most this many rows feed the reference statistics (a seeded sample beyond that).
REFERENCE_ROWS = 100_000


def train_model(
    recipe: str | Recipe,
    table: pa.Table,
    label: str | None,
    params: Mapping[str, Any] | None = None,
    *,
    name: str,
    lineage: Lineage | None = None,
    seed: int = 0,
    plot_dir: Path | None = None,
    description: str | None = None,
    threads: int | None = None,
) -> tuple[TrainedModel, ModelCard]:
    """Split, train, evaluate, export (with parity) and build the card, without registering.

    ``threads`` caps the BLAS/OpenMP threads of training (scikit-learn, NumPy); None keeps the libraries'
    defaults. On a busy machine 1 is often several times faster for small tables.
    """
    chosen = get_recipe(recipe)
    resolved = resolve_params(chosen, params)
    started = time.perf_counter()
    with _thread_limit(threads):
        trained = chosen.train(table, label, resolved, seed, plot_dir=plot_dir)
    reference = _reference(trained, table, label, resolved, seed)
    lineage = lineage or Lineage()
    if lineage.rows is None:
        lineage = lineage.model_copy(update={"rows": table.num_rows})
    card = trained.card(name, lineage=lineage, reference=reference, description=description)
    logger.info(
        "trained %s with recipe %s in %.1fs (parity %.2g)",
        name,
        chosen.name,
        time.perf_counter() - started,
        trained.parity.max_abs_diff,
    )
    return trained, card


def train_table(
    recipe: str | Recipe,
    table: pa.Table,
    label: str | None,
    params: Mapping[str, Any] | None = None,
    *,
    name: str,
    registry: Registry,
    lineage: Lineage | None = None,
    seed: int = 0,
    description: str | None = None,
    threads: int | None = None,
) -> ModelVersion:
    """Train with ``recipe`` on ``table`` and register the result (artifact, card, plots) as a new version."""
    with tempfile.TemporaryDirectory(prefix="streamml-train-") as folder:
        trained, card = train_model(
            recipe,
            table,
            label,
            params,
            name=name,
            lineage=lineage,
            seed=seed,
            plot_dir=Path(folder) / "plots",
            description=description,
            threads=threads,
        )
        return registry.register(name, trained.onnx_bytes, card, plots=trained.plots)


@contextlib.contextmanager
def _thread_limit(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    if threads < 1:
        raise ModelError(f"threads must be at least 1, got {threads}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield


def _reference(
    trained: TrainedModel, table: pa.Table, label: str | None, params: Mapping[str, Any], seed: int
) -> ReferenceStats | None:
    """Statistics of the training rows' features and of the model's outputs on them.

    Numeric features get moments, quantiles and a histogram, string features the count of each category; a
    model with one input per column (the tabular recipe) scores the rows as a table, so its string columns
    also feed the output statistics.
    """
    columns = trained.features
    numeric = [c for c in columns if _is_scalar(table.schema.field(c).type)]
    clean: pa.Table | None = None  # the rows, kept for a model with one input per column
    if len(numeric) == len(columns) and trained.recipe in ("autoencoder", "gbdt", "classifier"):
        _, _, x, _, splits = prepare(table, label, {**params, "features": columns}, seed, None)
        x = x[splits.train]
    else:
        clean = drop_incomplete(table, columns)
        stacked = columns if len(numeric) == len(columns) else numeric
        x = feature_matrix(clean, stacked) if stacked else np.empty((clean.num_rows, 0), np.float32)
        columns = stacked
    if len(x) > REFERENCE_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), REFERENCE_ROWS, replace=False))
        x = x[keep]
        clean = clean.take(keep) if clean is not None else None
    outputs: dict[str, np.ndarray] = {}
    model = OnnxModel(trained.onnx_bytes, source=trained.recipe)
    inputs = model.signature.inputs
    raw: dict[str, np.ndarray] | None = None
    if len(inputs) == 1 and inputs[0].shape is not None and len(inputs[0].shape) == 2 and len(x):
        raw = model.predict(x)
    elif len(inputs) > 1 and clean is not None and clean.num_rows:
        raw = model.predict(clean.select(trained.features))
    if raw is not None:
        struct = trained.output.postprocess(raw, trained.threshold)
        for field, array in zip(struct.type, struct.flatten(), strict=True):
            if pa.types.is_floating(field.type) or pa.types.is_boolean(field.type):
                outputs[field.name] = array.to_numpy(zero_copy_only=False).astype(np.float64)
    names = columns if x.shape[1] == len(columns) else [f"{columns[0]}[{i}]" for i in range(x.shape[1])]
    reference = reference_stats(x, names, outputs)
    categorical = [c for c in trained.features if c not in numeric and _is_category(table.schema.field(c).type)]
    if categorical and clean is not None:  # a monitor compares their live categories with these counts
        found = {c: category_stats(clean.column(c)) for c in categorical}
        reference = reference.model_copy(update={"features": {**reference.features, **found}})
    return reference


def _is_category(data_type: pa.DataType) -> bool:
    """A column whose values are categories a monitor can count (not an image's pixel list)."""
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_boolean(data_type)


def _is_scalar(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type)
