"""Sequence classification over per-key windows (e.g. predictive maintenance), PyTorch LSTM/GRU.

Windowing and labelling are plain NumPy (:func:`make_windows`); the model needs PyTorch
(``pip install 'streamml[torch]'``). A window is ``k`` consecutive readings of one key; its label says
whether a failure occurs within the next ``h`` readings of that key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.errors import ModelError
from streamml.models.card import OutputSpec
from streamml.models.recipes import plots
from streamml.models.recipes.base import (
    Splits,
    TrainedModel,
    drop_incomplete,
    feature_columns,
    feature_matrix,
    label_array,
    positive_class,
    resolve_params,
    split_indices,
)
from streamml.models.recipes.evaluation import binary_metrics, choose_threshold, validation_summary


@dataclass(frozen=True)
class Windows:
    """Windows ``[M, k, features]``, their labels and keys, and the order value (time) of their last reading."""

    values: np.ndarray
    labels: np.ndarray
    keys: np.ndarray
    ends: np.ndarray


def make_windows(
    keys: np.ndarray, order: np.ndarray, values: np.ndarray, failures: np.ndarray, window: int, horizon: int
) -> Windows:
    """All windows of ``window`` readings per key, labelled "failure within the next ``horizon`` readings".

    Rows are sorted by (key, order); windows never cross keys, and windows without ``horizon`` further
    readings of the same key are left out (their label is not known yet). Fully vectorised.
    """
    if window < 1 or horizon < 1:
        raise ModelError("window and horizon must be at least 1")
    values = np.asarray(values, dtype=np.float32)
    values = values.reshape(len(values), -1)
    sorted_rows = np.lexsort((np.asarray(order), np.asarray(keys)))
    keys_s = np.asarray(keys)[sorted_rows]
    order_s = np.asarray(order)[sorted_rows]
    values_s = values[sorted_rows]
    fail_s = np.asarray(failures, dtype=bool)[sorted_rows]
    span = window + horizon
    count = len(keys_s) - span + 1
    if count <= 0:
        return Windows(np.empty((0, window, values.shape[1]), np.float32), np.empty(0, bool), keys_s[:0], order_s[:0])
    starts = np.arange(count)
    starts = starts[keys_s[starts] == keys_s[starts + span - 1]]
    cumulative = np.concatenate([[0], np.cumsum(fail_s)])
    labels = (cumulative[starts + span] - cumulative[starts + window]) > 0
    view = np.lib.stride_tricks.sliding_window_view(values_s, window, axis=0)  # [rows, features, window]
    windows = np.ascontiguousarray(view[starts].transpose(0, 2, 1))
    return Windows(windows, labels, keys_s[starts], order_s[starts + window - 1])


class SequenceRecipe:
    """LSTM/GRU over windows of ``window`` readings predicting failure within ``horizon`` readings."""

    name = "sequence"
    default_params: Mapping[str, Any] = {
        "key_column": None,  # required: the entity (machine, device) column
        "window": 20,
        "horizon": 10,
        "cell": "lstm",
        "hidden": 32,
        "layers": 1,
        "epochs": 30,
        "batch_size": 256,
        "learning_rate": 0.003,
        "patience": 5,
        "threshold_rule": "f1",
        "precision_floor": None,
        "positive_label": None,
        "parity_tolerance": 1e-4,
    }

    def windows(self, table: pa.Table, label: str, params: Mapping[str, Any]) -> tuple[Windows, list[str]]:
        """The labelled windows of ``table`` and the feature columns (NumPy only, no torch needed)."""
        p = resolve_params(self, params)
        key = p["key_column"]
        if not key or key not in table.column_names:
            raise ModelError("recipe 'sequence' needs params key_column naming the entity column")
        columns = feature_columns(table, label, {**p, "exclude": [*p["exclude"], key]})
        table = drop_incomplete(table, [*columns, label, key])
        order_column = p["time_column"]
        order = table.column(order_column).to_numpy(zero_copy_only=False) if order_column else np.arange(table.num_rows)
        labels = label_array(table, label)
        failures = labels == positive_class(labels, p["positive_label"])
        keys = table.column(key).to_numpy(zero_copy_only=False)
        windows = make_windows(
            keys, order, feature_matrix(table, columns), failures, int(p["window"]), int(p["horizon"])
        )
        return windows, columns

    def train(
        self,
        features: pa.Table,
        label: str | None,
        params: Mapping[str, Any],
        seed: int,
        *,
        splits: Splits | None = None,
        plot_dir: Path | None = None,
    ) -> TrainedModel:
        """Window, split by window end per class (oldest windows train), train, evaluate, export with parity."""
        from streamml.models.export import export_torch
        from streamml.models.recipes.torch_support import fit, require_torch, sequence_module

        torch = require_torch(self.name)
        if label is None:
            raise ModelError("recipe 'sequence' needs a label column (the failure flag)")
        p = resolve_params(self, params)
        data, columns = self.windows(features, label, p)
        if len(data.labels) < 10 or not data.labels.any():
            raise ModelError("too few windows (or no failures) to train a sequence model")
        # oldest windows train, newest test, per class: failures are rare and cluster in time
        parts = split_indices(len(data.labels), p["split"], seed=seed, stratify=data.labels, order=data.ends)
        torch.manual_seed(seed)  # initial weights too: the same seed gives the same model
        module = sequence_module(len(columns), int(p["hidden"]), p["cell"], int(p["layers"]))
        train_loss, val_loss = fit(
            module,
            data.values[parts.train],
            data.labels[parts.train],
            data.values[parts.validation],
            data.labels[parts.validation],
            loss="bce",
            epochs=int(p["epochs"]),
            batch_size=int(p["batch_size"]),
            learning_rate=float(p["learning_rate"]),
            seed=seed,
            patience=int(p["patience"]),
        )
        held_out = parts.test if len(parts.test) else parts.validation
        exported = export_torch(
            module, data.values[held_out], output_names=["probability"], tolerance=float(p["parity_tolerance"])
        )
        from streamml.models.runtime import OnnxModel

        scores = OnnxModel(exported.onnx_bytes).predict(data.values)["probability"].reshape(-1)
        threshold, rule = choose_threshold(
            data.labels[parts.validation], scores[parts.validation], p["threshold_rule"], p["precision_floor"]
        )
        metrics = binary_metrics(data.labels[held_out], scores[held_out], threshold)
        metrics.update(validation_summary(data.labels[parts.validation], scores[parts.validation], threshold))
        metrics["epochs"] = len(train_loss)
        written: list[Path] = []
        if plot_dir is not None:
            written.append(plots.loss_curve({"train": train_loss, "validation": val_loss}, plot_dir / "loss.png"))
            written += plots.binary_plots(data.labels[held_out], scores[held_out], threshold, plot_dir)
        return TrainedModel(
            onnx_bytes=exported.onnx_bytes,
            recipe=self.name,
            framework="torch",
            framework_version=str(torch.__version__),
            features=columns,
            label=label,
            output=OutputSpec.classifier(["0", "1"], probability_output="probability", positive_label="1"),
            metrics=metrics,
            params=dict(p),
            parity=exported.parity,
            threshold=threshold,
            threshold_rule=rule,
            plots=written,
        )
