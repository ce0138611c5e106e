"""Autoencoder anomaly detection (e.g. fraud): learn to reconstruct normal rows, score = reconstruction MSE.

The exported graph reads raw features and returns ``score`` itself: standardisation, the network and the
mean squared reconstruction error all run inside ONNX Runtime. The threshold is chosen on validation rows
(best F1, or best recall above a precision floor), never fixed in advance.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from streamml.errors import ModelError
from streamml.models.card import OutputSpec
from streamml.models.export import TARGET_OPSET, check_parity
from streamml.models.graph import reconstruction_scorer
from streamml.models.recipes import plots
from streamml.models.recipes.base import Splits, TrainedModel, positive_class, prepare, resolve_params
from streamml.models.recipes.evaluation import binary_metrics, choose_threshold, validation_summary

logger = logging.getLogger(__name__)


def bottleneck(width: int) -> list[int]:
    """Default hidden layers for ``width`` features, e.g. 30 -> [14, 7, 14]."""
    inner = max(2, width // 4)
    outer = max(inner + 1, 2 * inner)
    return [outer, inner, outer]


class AutoencoderRecipe:
    """Dense autoencoder (scikit-learn MLPRegressor X -> X) trained on the normal class only."""

    name = "autoencoder"
    default_params: Mapping[str, Any] = {
        "hidden": None,  # hidden layer sizes; default bottleneck(features)
        "activation": "tanh",
        "epochs": 150,
        "patience": 10,  # epochs without validation improvement before stopping
        "batch_size": 256,
        "learning_rate": 0.002,
        "alpha": 1e-4,  # L2 penalty
        "threshold_rule": "f1",  # or precision_floor
        "precision_floor": None,
        "positive_label": None,  # default "1"/"true" or the rarer class
        "contamination": 0.01,  # without labels: share of validation rows above the threshold
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
        """Train, choose the threshold, evaluate on the test split, export and check parity."""
        import sklearn
        from sklearn.neural_network import MLPRegressor
        from sklearn.preprocessing import StandardScaler

        p = resolve_params(self, params)
        _, columns, x, y, splits = prepare(features, label, p, seed, splits)
        positive = positive_class(y, p["positive_label"]) if y is not None else None
        is_pos = (y == positive) if y is not None else np.zeros(len(x), dtype=bool)
        normal_train = splits.train[~is_pos[splits.train]]
        normal_val = splits.validation[~is_pos[splits.validation]]
        if len(normal_train) < 10 or len(normal_val) < 2:
            raise ModelError("too few normal rows in the train/validation splits to train an autoencoder")

        scaler = StandardScaler().fit(x[normal_train].astype(np.float64))
        scaler.scale_ = np.where(scaler.scale_ > 1e-12, scaler.scale_, 1.0)
        z_train = scaler.transform(x[normal_train].astype(np.float64))
        z_val = scaler.transform(x[normal_val].astype(np.float64))
        hidden = list(p["hidden"] or bottleneck(x.shape[1]))
        network = MLPRegressor(
            hidden_layer_sizes=tuple(hidden),
            activation=p["activation"],
            batch_size=min(int(p["batch_size"]), len(z_train)),
            learning_rate_init=float(p["learning_rate"]),
            alpha=float(p["alpha"]),
            random_state=seed,
            shuffle=True,
        )
        train_loss, val_loss = self._fit(network, z_train, z_val, int(p["epochs"]), int(p["patience"]))

        proto = _to_onnx(network, x.shape[1])
        graph = reconstruction_scorer(proto, scaler.mean_, scaler.scale_, input_name="X", score_name="score")
        onnx_bytes = graph.SerializeToString()

        from streamml.models.runtime import OnnxModel

        runtime = OnnxModel(onnx_bytes, source="autoencoder")
        scores = runtime.predict(x)["score"].astype(np.float64)
        held_out = splits.test if len(splits.test) else splits.validation
        parity = check_parity(
            _reference_scores(scaler, network, x[held_out]),
            scores[held_out],
            output="score",
            tolerance=float(p["parity_tolerance"]),
            what="the autoencoder",
        )

        if y is not None:
            threshold, rule = choose_threshold(
                is_pos[splits.validation], scores[splits.validation], p["threshold_rule"], p["precision_floor"]
            )
            metrics = binary_metrics(is_pos[held_out], scores[held_out], threshold)
            metrics.update(validation_summary(is_pos[splits.validation], scores[splits.validation], threshold))
        else:
            threshold = float(np.quantile(scores[splits.validation], 1 - float(p["contamination"])))
            rule = f"{1 - float(p['contamination']):.3g} quantile of validation scores"
            metrics = {"rows": len(held_out), "score_mean": float(scores[held_out].mean())}
        metrics.update(epochs=len(train_loss), final_train_loss=train_loss[-1], final_validation_loss=val_loss[-1])

        written: list[Path] = []
        if plot_dir is not None:
            written.append(plots.loss_curve({"train": train_loss, "validation": val_loss}, plot_dir / "loss.png"))
            if y is not None and is_pos[held_out].any():
                written += plots.binary_plots(is_pos[held_out], scores[held_out], threshold, plot_dir)
        logger.info("autoencoder %s: %s", hidden, {k: v for k, v in metrics.items() if k.endswith("auc")})
        return TrainedModel(
            onnx_bytes=onnx_bytes,
            recipe=self.name,
            framework="scikit-learn",
            framework_version=sklearn.__version__,
            features=columns,
            label=label,
            output=OutputSpec.anomaly("score"),
            metrics=metrics,
            params={**p, "hidden": hidden, "positive_label": positive},
            parity=parity,
            threshold=threshold,
            threshold_rule=rule,
            plots=written,
        )

    @staticmethod
    def _fit(
        network: Any, z_train: np.ndarray, z_val: np.ndarray, epochs: int, patience: int
    ) -> tuple[list[float], list[float]]:
        """Epoch loop with validation loss and early stopping (keeps the best weights)."""
        train_loss: list[float] = []
        val_loss: list[float] = []
        best, best_state, stale = np.inf, None, 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(epochs):
                network.partial_fit(z_train, z_train)
                train_loss.append(float(np.mean((network.predict(z_train) - z_train) ** 2)))
                val_loss.append(float(np.mean((network.predict(z_val) - z_val) ** 2)))
                if val_loss[-1] < best - 1e-6:
                    best, stale = val_loss[-1], 0
                    best_state = ([w.copy() for w in network.coefs_], [b.copy() for b in network.intercepts_])
                else:
                    stale += 1
                    if stale >= patience:
                        break
        if best_state is not None:
            network.coefs_, network.intercepts_ = best_state
        return train_loss, val_loss


def _to_onnx(network: Any, width: int) -> Any:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    return to_onnx(network, initial_types=[("z", FloatTensorType([None, width]))], target_opset=TARGET_OPSET)


def _reference_scores(scaler: Any, network: Any, x: np.ndarray) -> np.ndarray:
    z = scaler.transform(x.astype(np.float64))
    return np.asarray(np.mean((network.predict(z) - z) ** 2, axis=1))
