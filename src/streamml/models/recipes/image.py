"""Small CNN image classifier (e.g. scikit-learn's 8x8 digits), with images stored as arrays in records.

Turning a list column into ``[N, 1, H, W]`` tensors is NumPy (:func:`images_from_column`); the model
needs PyTorch (``pip install 'streamml[torch]'``). Pixel scaling is part of the exported graph.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    label_array,
    resolve_params,
    split_indices,
)
from streamml.models.recipes.evaluation import multiclass_metrics


def images_from_column(column: pa.Array | pa.ChunkedArray, height: int, width: int) -> np.ndarray:
    """A list column of ``height*width`` pixel values per record -> float32 ``[N, 1, height, width]``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)):
        raise ModelError(f"image column must hold arrays of {height * width} pixels, got {column.type}")
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    if values.size != len(column) * height * width:
        raise ModelError(f"every image must have exactly {height}x{width} = {height * width} pixels")
    return values.reshape(len(column), 1, height, width)


class ImageRecipe:
    """Conv blocks + linear head (see :func:`image_module`); output ``probabilities`` over the label's classes."""

    name = "image"
    default_params: Mapping[str, Any] = {
        "image_column": None,  # default: the only list column
        "height": 8,
        "width": 8,
        "epochs": 30,
        "batch_size": 64,
        "learning_rate": 0.003,
        "patience": 5,
        "parity_tolerance": 1e-4,
    }

    def images(self, table: pa.Table, params: Mapping[str, Any]) -> tuple[np.ndarray, str]:
        """The image tensor of ``table`` and the column it came from (NumPy only)."""
        p = resolve_params(self, params)
        column = p["image_column"]
        if column is None:
            lists = [f.name for f in table.schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)]
            if len(lists) != 1:
                raise ModelError("set params image_column: the table has no single list column", hint=f"{lists}")
            column = lists[0]
        return images_from_column(table.column(column), int(p["height"]), int(p["width"])), column

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
        """Train with early stopping on validation, evaluate on test, export with a parity check."""
        from streamml.models.export import export_torch
        from streamml.models.recipes.torch_support import fit, image_module, require_torch

        torch = require_torch(self.name)
        if label is None:
            raise ModelError("recipe 'image' needs a label column")
        p = resolve_params(self, params)
        table = drop_incomplete(features, [label])
        x, column = self.images(table, p)
        y = label_array(table, label)
        classes = sorted(set(y.tolist()))
        codes = np.searchsorted(np.asarray(classes, dtype=object), y)
        splits = splits or split_indices(len(y), p["split"], seed=seed, stratify=y)
        torch.manual_seed(seed)  # initial weights too: the same seed gives the same model
        module = image_module(int(p["height"]), int(p["width"]), len(classes), float(max(x.max(), 1.0)))
        held_out = splits.test if len(splits.test) else splits.validation
        accuracy: dict[str, list[float]] = {"train": [], "test": []}

        def measure(trained: Any) -> None:  # accuracy of each split after each epoch, for the card's plot
            for split, rows in (("train", splits.train), ("test", held_out)):
                guessed = trained(torch.from_numpy(x[rows])).argmax(dim=1).numpy()
                accuracy[split].append(float((guessed == codes[rows]).mean()))

        train_loss, val_loss = fit(
            module,
            x[splits.train],
            codes[splits.train],
            x[splits.validation],
            codes[splits.validation],
            loss="nll",
            epochs=int(p["epochs"]),
            batch_size=int(p["batch_size"]),
            learning_rate=float(p["learning_rate"]),
            seed=seed,
            patience=int(p["patience"]),
            on_epoch=measure,
        )
        exported = export_torch(
            module, x[held_out], output_names=["probabilities"], tolerance=float(p["parity_tolerance"])
        )
        from streamml.models.runtime import OnnxModel

        probs = OnnxModel(exported.onnx_bytes).predict(x[held_out])["probabilities"]
        predicted = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
        metrics = multiclass_metrics(y[held_out], predicted, classes)
        metrics["epochs"] = len(train_loss)
        truth = np.asarray(y[held_out], dtype=object)
        metrics["per_class_accuracy"] = {
            str(c): float((predicted[truth == c] == c).mean()) for c in classes if (truth == c).any()
        }
        metrics["accuracy_per_epoch"] = accuracy
        written: list[Path] = []
        if plot_dir is not None:
            written.append(plots.loss_curve({"train": train_loss, "validation": val_loss}, plot_dir / "loss.png"))
            written.append(plots.confusion(metrics["confusion_matrix"], classes, plot_dir / "confusion.png"))
            written.append(plots.accuracy_curve(accuracy, plot_dir / "accuracy.png"))
            written.append(plots.per_class_accuracy(metrics["per_class_accuracy"], plot_dir / "per_class_accuracy.png"))
        return TrainedModel(
            onnx_bytes=exported.onnx_bytes,
            recipe=self.name,
            framework="torch",
            framework_version=str(torch.__version__),
            features=[column],
            label=label,
            output=OutputSpec.classifier(classes),
            metrics=metrics,
            params={**p, "image_column": column},
            parity=exported.parity,
            plots=written,
        )
