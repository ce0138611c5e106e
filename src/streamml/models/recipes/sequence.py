"""Sequence classification over per-key windows (e.g. predictive maintenance), PyTorch LSTM/GRU.

Windowing and labelling are plain NumPy (:func:`make_windows`); the model needs PyTorch
(``pip install 'streamml[torch]'``). A window is ``k`` consecutive readings of one key; its label says
whether a failure occurs within the next ``h`` readings of that key.
"""

from __future__ import annotations

import logging
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
from streamml.models.recipes.evaluation import (
    binary_metrics,
    choose_threshold,
    lead_time_metrics,
    validation_summary,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Windows:
    """Windows ``[M, k, features]``, their labels and keys, and the order value (time) of their last reading.

    ``label_ends`` is the order value of the last reading the label looked at (``horizon`` readings after the
    window); ``to_failure`` how many readings after its last reading the key's next failure comes (1 = the
    very next reading; :data:`NO_FAILURE` when none follows) and ``failure`` that failure's row (its index
    in the key-then-order sorted rows; -1 when none follows).
    """

    values: np.ndarray
    labels: np.ndarray
    keys: np.ndarray
    ends: np.ndarray
    label_ends: np.ndarray | None = None
    to_failure: np.ndarray | None = None
    failure: np.ndarray | None = None


#: ``Windows.to_failure`` of a window after which its key does not fail again
NO_FAILURE = np.iinfo(np.int64).max


def make_windows(
    keys: np.ndarray, order: np.ndarray, values: np.ndarray, failures: np.ndarray, window: int, horizon: int
) -> Windows:
    """All windows of ``window`` readings per key, labelled "failure within the next ``horizon`` readings".

    Rows are sorted by (key, order); windows never cross keys. Left out are windows without ``horizon``
    further readings of the same key (their label is not known yet) and windows whose last reading is itself
    a failure: there the failure is observed, not predicted, and the readings just before it look the same,
    so no model could tell the two apart. Fully vectorised.
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
        none = np.empty(0, np.int64)
        return Windows(
            np.empty((0, window, values.shape[1]), np.float32), np.empty(0, bool), keys_s[:0], order_s[:0],
            order_s[:0], none, none,
        )  # fmt: skip
    starts = np.arange(count)
    starts = starts[keys_s[starts] == keys_s[starts + span - 1]]
    starts = starts[~fail_s[starts + window - 1]]  # at a failing reading the failure is observed, not predicted
    last = starts + window - 1
    # the first failure row after each window's last reading; one in another key lies beyond the horizon
    failure_rows = np.append(np.flatnonzero(fail_s), len(keys_s) - 1)  # + a stand-in past the last failure
    following = np.searchsorted(failure_rows[:-1], last, side="right")
    next_row = failure_rows[following]
    has_next = (following < len(failure_rows) - 1) & (keys_s[next_row] == keys_s[last])
    to_failure = np.where(has_next, next_row - last, NO_FAILURE).astype(np.int64)
    labels = to_failure <= horizon
    view = np.lib.stride_tricks.sliding_window_view(values_s, window, axis=0)  # [rows, features, window]
    windows = np.ascontiguousarray(view[starts].transpose(0, 2, 1))
    return Windows(
        windows, labels, keys_s[starts], order_s[last], order_s[starts + span - 1], to_failure,
        np.where(has_next, next_row, -1).astype(np.int64),
    )  # fmt: skip


def time_split(data: Windows, fractions: Any) -> Splits:
    """Split windows by time: the oldest train, the newest test, with no label reaching into a later part.

    The cuts are the end times at the train and train + validation fractions of the failure windows (of all
    windows when none is labelled positive), so each part gets its share of the rare failures, as a split per
    class would, while staying one stretch of time. A window belongs to a
    part when it ends at or after the part's cut and its label (``horizon`` readings after its end) is
    known before the next part's cut; the few windows straddling a cut are left out, so no training label
    peeks at the readings the model is validated or tested on. Every part is one stretch of time (a split
    per class cuts the two classes at different times, and windows overlap across the cut), which is also
    what a lead time needs: all of a failure's windows in one part.
    """
    parts = np.asarray(fractions, dtype=np.float64)
    if parts.shape != (3,) or (parts < 0).any() or parts[0] <= 0:
        raise ModelError(f"split fractions must be three non-negative numbers, got {list(fractions)}")
    parts = parts / parts.sum()
    ends = np.asarray(data.ends)
    label_ends = ends if data.label_ends is None else np.asarray(data.label_ends)
    labels = np.asarray(data.labels, dtype=bool)
    ordered = np.sort(ends[labels] if labels.any() else ends)
    positions = np.round(np.cumsum(parts)[:2] * len(ordered)).astype(int)

    def after(position: int) -> np.ndarray:  # windows ending at or after the cut at this position
        return ends >= ordered[position] if position < len(ordered) else np.zeros(len(ends), bool)

    def before(position: int) -> np.ndarray:  # windows whose label is known before that cut
        return label_ends < ordered[position] if position < len(ordered) else np.ones(len(ends), bool)

    validation_from, test_from = (int(p) for p in positions)
    train = before(validation_from)
    validation = after(validation_from) & before(test_from)
    test = after(test_from)
    return Splits(train=np.flatnonzero(train), validation=np.flatnonzero(validation), test=np.flatnonzero(test))


def lead_times(data: Windows, rows: np.ndarray, alert: np.ndarray, horizon: int) -> dict[str, Any]:
    """Lead-time metrics (see :func:`lead_time_metrics`) of the failures whose horizon lies wholly in ``rows``.

    ``alert`` says, per window of ``rows``, whether the model raised an alert. A failure counts when every
    window of its horizon that exists is among ``rows`` (not cut off by the start of the evaluated part).
    """
    if data.to_failure is None or data.failure is None:
        raise ModelError("the windows carry no failure positions; build them with make_windows")
    rows = np.asarray(rows, dtype=np.int64)
    in_horizon = data.to_failure <= horizon
    events, windows_per_event = np.unique(data.failure[in_horizon], return_counts=True)
    chosen = rows[in_horizon[rows]]
    mine, mine_per_event = np.unique(data.failure[chosen], return_counts=True)
    whole = mine[mine_per_event == windows_per_event[np.searchsorted(events, mine)]]
    keep = np.isin(data.failure[chosen], whole)
    evaluated = chosen[keep]
    alerted = np.asarray(alert, dtype=bool)[in_horizon[rows]][keep]
    return lead_time_metrics(data.failure[evaluated], data.to_failure[evaluated], alerted)


class SequenceRecipe:
    """LSTM/GRU over windows of ``window`` readings predicting failure within ``horizon`` readings."""

    name = "sequence"
    default_params: Mapping[str, Any] = {
        "key_column": None,  # required: the entity (machine, device) column
        "window": 20,
        "horizon": 20,
        "inputs": "both",  # level, change (minus the window's first reading) or both, per feature
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
        from streamml.models.recipes.torch_support import (
            fit,
            require_torch,
            sequence_module,
            standardisation,
            window_changes,
        )

        torch = require_torch(self.name)
        if label is None:
            raise ModelError("recipe 'sequence' needs a label column (the failure flag)")
        p = resolve_params(self, params)
        data, columns = self.windows(features, label, p)
        if len(data.labels) < 10 or not data.labels.any():
            raise ModelError("too few windows (or no failures) to train a sequence model")
        # the oldest windows train, the newest test; windows overlap, so the split is by time, not by row
        parts = time_split(data, p["split"])
        validation_labels = data.labels[parts.validation]
        if validation_labels.all() or not validation_labels.any():
            # failures in lockstep across keys leave a stretch of time with one class only: split per class
            logger.info("no time cut gives the validation windows both classes; splitting each class by time")
            parts = split_indices(len(data.labels), p["split"], seed=seed, stratify=data.labels, order=data.ends)
        if not data.labels[parts.train].any():
            raise ModelError("no failure within the horizon in the training part", hint="use more history")
        training = data.values[parts.train]
        level, change = standardisation(training), standardisation(window_changes(training))
        torch.manual_seed(seed)  # initial weights too: the same seed gives the same model
        module = sequence_module(
            len(columns), int(p["hidden"]), p["cell"], int(p["layers"]), level, change, str(p["inputs"])
        )
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
        metrics.update(lead_times(data, held_out, scores[held_out] >= threshold, int(p["horizon"])))
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
