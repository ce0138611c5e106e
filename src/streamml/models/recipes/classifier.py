"""Tabular classifier: StandardScaler + MLP (or logistic regression) in one exported graph; string labels."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.errors import ModelError
from streamml.models.card import OutputSpec
from streamml.models.export import export_sklearn
from streamml.models.recipes import plots
from streamml.models.recipes.base import Splits, TrainedModel, prepare, resolve_params
from streamml.models.recipes.evaluation import multiclass_metrics


class ClassifierRecipe:
    """``Pipeline(StandardScaler, MLPClassifier | LogisticRegression)``; the normaliser is inside the graph."""

    name = "classifier"
    default_params: Mapping[str, Any] = {
        "model": "mlp",  # or "logistic"
        "hidden": [16],
        "activation": "relu",
        "solver": "auto",  # lbfgs below 2,000 training rows (small data), else adam
        "max_iter": 1000,
        "alpha": 1e-2,
        "C": 1.0,  # inverse regularisation of the logistic model
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
        """Fit on train + validation rows, evaluate on test, export and check parity."""
        import sklearn
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        if label is None:
            raise ModelError("recipe 'classifier' needs a label column")
        p = resolve_params(self, params)
        _, columns, x, y, splits = prepare(features, label, p, seed, splits)
        assert y is not None
        fit_rows = np.concatenate([splits.train, splits.validation])
        if p["model"] == "mlp":
            solver = p["solver"] if p["solver"] != "auto" else ("lbfgs" if len(fit_rows) < 2000 else "adam")
            head: Any = MLPClassifier(
                solver=solver,
                hidden_layer_sizes=tuple(p["hidden"]),
                activation=p["activation"],
                max_iter=int(p["max_iter"]),
                alpha=float(p["alpha"]),
                random_state=seed,
            )
        elif p["model"] == "logistic":
            head = LogisticRegression(C=float(p["C"]), max_iter=int(p["max_iter"]))
        else:
            raise ModelError(f"unknown classifier model '{p['model']}'", hint="use mlp or logistic")
        pipeline = Pipeline([("scale", StandardScaler()), ("model", head)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipeline.fit(x[fit_rows], y[fit_rows].astype(str))
        held_out = splits.test if len(splits.test) else splits.validation
        exported = export_sklearn(pipeline, x[held_out], tolerance=float(p["parity_tolerance"]))
        classes = [str(c) for c in pipeline.classes_]
        from streamml.models.runtime import OnnxModel

        probs = OnnxModel(exported.onnx_bytes, source="classifier").predict(x[held_out])["probabilities"]
        predicted = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
        metrics = multiclass_metrics(y[held_out], predicted, classes)
        written = (
            [plots.confusion(metrics["confusion_matrix"], classes, plot_dir / "confusion.png")] if plot_dir else []
        )
        return TrainedModel(
            onnx_bytes=exported.onnx_bytes,
            recipe=self.name,
            framework=exported.framework,
            framework_version=sklearn.__version__,
            features=columns,
            label=label,
            output=OutputSpec.classifier(classes),
            metrics=metrics,
            params=p,
            parity=exported.parity,
            plots=written,
        )
