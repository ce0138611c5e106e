"""Supervised gradient-boosted trees (scikit-learn HistGradientBoostingClassifier) for binary labels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from streamml.errors import ModelError
from streamml.models.card import OutputSpec
from streamml.models.export import export_sklearn
from streamml.models.recipes import plots
from streamml.models.recipes.base import Splits, TrainedModel, positive_class, prepare, resolve_params
from streamml.models.recipes.evaluation import binary_metrics, choose_threshold, validation_summary


class GbdtRecipe:
    """Histogram gradient boosting; the threshold on P(positive) is chosen on validation rows."""

    name = "gbdt"
    default_params: Mapping[str, Any] = {
        "max_iter": 200,
        "learning_rate": 0.1,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "l2_regularization": 0.0,
        "class_weight": "balanced",  # rare positives (fraud) need the weight; None for balanced data
        "threshold_rule": "f1",
        "precision_floor": None,
        "positive_label": None,
        "parity_tolerance": 1e-4,
    }

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
        """Train on the train split (early stopping on validation), evaluate on test, export, check parity."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        if label is None:
            raise ModelError("recipe 'gbdt' needs a label column")
        p = resolve_params(self, params)
        _, columns, x, y, splits = prepare(features, label, p, seed, splits)
        assert y is not None
        positive = positive_class(y, p["positive_label"])
        classes = sorted(set(y.tolist()))
        if len(classes) != 2:
            raise ModelError(f"recipe 'gbdt' needs exactly two classes, got {classes}", hint="use 'classifier'")
        model = HistGradientBoostingClassifier(
            max_iter=int(p["max_iter"]),
            learning_rate=float(p["learning_rate"]),
            max_leaf_nodes=int(p["max_leaf_nodes"]),
            min_samples_leaf=int(p["min_samples_leaf"]),
            l2_regularization=float(p["l2_regularization"]),
            class_weight=p["class_weight"],
            early_stopping=True,
            random_state=seed,
        )
        model.fit(x[splits.train], y[splits.train])
        held_out = splits.test if len(splits.test) else splits.validation
        exported = export_sklearn(model, x[held_out], tolerance=float(p["parity_tolerance"]))
        pos_index = list(model.classes_).index(positive)
        from streamml.models.runtime import OnnxModel

        probs = OnnxModel(exported.onnx_bytes, source="gbdt").predict(x)["probabilities"][:, pos_index]
        is_pos = y == positive
        threshold, rule = choose_threshold(
            is_pos[splits.validation], probs[splits.validation], p["threshold_rule"], p["precision_floor"]
        )
        metrics = binary_metrics(is_pos[held_out], probs[held_out], threshold)
        metrics.update(validation_summary(is_pos[splits.validation], probs[splits.validation], threshold))
        metrics["iterations"] = int(model.n_iter_)
        written = plots.binary_plots(is_pos[held_out], probs[held_out], threshold, plot_dir) if plot_dir else []
        return TrainedModel(
            onnx_bytes=exported.onnx_bytes,
            recipe=self.name,
            framework=exported.framework,
            framework_version=exported.framework_version,
            features=columns,
            label=label,
            output=OutputSpec.classifier([str(c) for c in model.classes_], positive_label=positive),
            metrics=metrics,
            params={**p, "positive_label": positive},
            parity=exported.parity,
            threshold=threshold,
            threshold_rule=rule,
            plots=written,
        )
