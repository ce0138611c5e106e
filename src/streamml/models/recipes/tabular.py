"""Tabular classifier over numeric and string (categorical) columns, with the encoding inside the graph.

The exported ONNX graph has one input per feature column, named as the column, of shape ``[N, 1]``:
``float32`` for a numeric column, ``string`` for a categorical one. Strings are one-hot (or ordinal) encoded
and numbers scaled inside the graph, so a model server can feed named features (TF Serving ``:classify``
examples, OIP v2 named inputs) and ``PREDICT('m', col, ...)`` can pass raw columns. A category not seen in
training encodes as all zeros (one-hot) or as -1 (ordinal) instead of failing. Outputs: ``label`` (string
``[N]``) and ``probabilities`` (``float32 [N, classes]``, in the card's class order).

    Pipeline(ColumnTransformer([StandardScaler -> numerics, OneHotEncoder -> strings]), LogisticRegression)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamml.errors import ModelError
from streamml.models.card import OutputSpec, Parity
from streamml.models.export import TARGET_OPSET, _first_line, _tree_converters, check_parity
from streamml.models.recipes import plots
from streamml.models.recipes.base import (
    Splits,
    TrainedModel,
    drop_incomplete,
    feature_columns,
    label_array,
    positive_class,
    resolve_params,
    split_indices,
)
from streamml.models.recipes.evaluation import binary_metrics, multiclass_metrics

logger = logging.getLogger(__name__)

MODELS = ("logistic", "mlp", "gbdt")
ENCODINGS = ("onehot", "ordinal")
#: default iterations per head
_MAX_ITER = {"logistic": 1000, "mlp": 300, "gbdt": 200}


def _is_numeric(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_boolean(data_type)


def _is_text(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type)


def tabular_columns(table: pa.Table, label: str | None, params: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The numeric and the categorical feature columns, each in the table's (or ``features``') order.

    Without ``params['features']``: every numeric and string column but the label, time and excluded ones;
    a string column with more than ``max_categories`` distinct values (an id, a timestamp) is left out.
    """
    if params.get("features"):
        columns = feature_columns(table, label, params)
    else:
        skip = {label, params.get("time_column"), *params.get("exclude", [])}
        limit = params.get("max_categories")
        columns = []
        for f in table.schema:
            if f.name in skip or not (_is_numeric(f.type) or _is_text(f.type)):
                continue
            if _is_text(f.type) and limit is not None:
                distinct = pc.count_distinct(table.column(f.name)).as_py()
                if distinct > int(limit):
                    logger.info("left out column %s: %d distinct values > max_categories", f.name, distinct)
                    continue
            columns.append(f.name)
    kinds = {name: table.schema.field(name).type for name in columns}
    wrong = [f"{n} ({t})" for n, t in kinds.items() if not (_is_numeric(t) or _is_text(t))]
    if wrong:
        raise ModelError(f"recipe 'tabular' reads numeric and string columns, not {', '.join(wrong)}")
    if not columns:
        raise ModelError("the data has no numeric or string feature columns", hint=f"columns: {table.column_names}")
    return [n for n in columns if _is_numeric(kinds[n])], [n for n in columns if _is_text(kinds[n])]


def column_arrays(table: pa.Table, numeric: Sequence[str], categorical: Sequence[str]) -> dict[str, np.ndarray]:
    """Each feature as a 1-D array: float32 for numerics, object (str) for categories, in ``table`` order."""
    arrays: dict[str, np.ndarray] = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name in numeric:
            arrays[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
        elif name in categorical:
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            arrays[name] = np.asarray(column.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    return arrays


class TabularRecipe:
    """``Pipeline(ColumnTransformer(scale numerics, encode strings), logistic | mlp | gbdt)``, one input per
    column; fit on train + validation rows, evaluated on test rows."""

    name = "tabular"
    default_params: Mapping[str, Any] = {
        "model": "logistic",  # or "mlp", "gbdt"
        "encoding": "auto",  # "onehot" or "ordinal"; auto: one-hot, ordinal for gbdt
        "max_categories": 100,  # string columns with more distinct values are not features (unless named)
        "max_iter": None,  # default per model: logistic 1000, mlp 300, gbdt 200
        "C": 1.0,  # inverse regularisation of the logistic model
        "hidden": [32],  # mlp layers
        "alpha": 1e-3,  # mlp L2 penalty
        "learning_rate": 0.1,  # gbdt
        "max_leaf_nodes": 31,  # gbdt
        "positive_label": None,  # binary labels: the class whose ROC/PR AUC is reported
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
        """Fit, evaluate on held-out rows, export with one input per column and check parity."""
        import sklearn

        if label is None:
            raise ModelError("recipe 'tabular' needs a label column")
        p = resolve_params(self, params)
        numeric, categorical = tabular_columns(features, label, p)
        columns = [c for c in features.column_names if c in {*numeric, *categorical}]
        if p.get("features"):
            columns = list(p["features"])
        table = drop_incomplete(features, [*columns, label])
        if table.num_rows < 10:
            raise ModelError(f"only {table.num_rows} complete rows to train on")
        y = label_array(table, label)
        if len(set(y.tolist())) < 2:
            raise ModelError(f"label column '{label}' has a single class", hint="a classifier needs two or more")
        if splits is None:
            time_column = p.get("time_column")
            order = table.column(time_column).to_numpy(zero_copy_only=False) if time_column else None
            splits = split_indices(table.num_rows, p["split"], seed=seed, stratify=y, order=order)
        arrays = column_arrays(table.select(columns), numeric, categorical)
        pipeline = _pipeline(p, numeric, categorical, seed)
        fit_rows = np.concatenate([splits.train, splits.validation])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipeline.fit(_frame(arrays, fit_rows), y[fit_rows])
        held_out = splits.test if len(splits.test) else splits.validation
        onnx_bytes, parity = export_columns(pipeline, arrays, held_out, numeric, tolerance=float(p["parity_tolerance"]))
        classes = [str(c) for c in pipeline.classes_]
        from streamml.models.runtime import OnnxModel

        sample = {name: values[held_out] for name, values in arrays.items()}
        probs = OnnxModel(onnx_bytes, source="tabular").predict(sample)["probabilities"]
        predicted = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
        metrics = multiclass_metrics(y[held_out], predicted, classes)
        positive = positive_class(y, p["positive_label"]) if len(classes) == 2 else None
        written = []
        if positive is not None:
            is_pos = y[held_out] == positive
            scores = probs[:, classes.index(positive)]
            binary = binary_metrics(is_pos, scores, None)
            metrics.update({k: binary[k] for k in ("roc_auc", "pr_auc", "positives") if k in binary})
            if plot_dir:
                written.append(plots.roc_curve(is_pos, scores, plot_dir / "roc.png"))
        if plot_dir:
            written.append(plots.confusion(metrics["confusion_matrix"], classes, plot_dir / "confusion.png"))
        metrics["numeric_features"] = len(numeric)
        metrics["categorical_features"] = len(categorical)
        return TrainedModel(
            onnx_bytes=onnx_bytes,
            recipe=self.name,
            framework="scikit-learn",
            framework_version=sklearn.__version__,
            features=columns,
            label=label,
            output=OutputSpec.classifier(classes, positive_label=positive),
            metrics=metrics,
            params={**p, "positive_label": positive},
            parity=parity,
            plots=written,
        )


def _pipeline(p: Mapping[str, Any], numeric: list[str], categorical: list[str], seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    model = p["model"]
    if model not in MODELS:
        raise ModelError(f"unknown tabular model '{model}'", hint=f"use one of {', '.join(MODELS)}")
    encoding = p["encoding"] if p["encoding"] != "auto" else ("ordinal" if model == "gbdt" else "onehot")
    if encoding not in ENCODINGS:
        raise ModelError(f"unknown encoding '{encoding}'", hint="use onehot, ordinal or auto")
    iterations = int(p["max_iter"] or _MAX_ITER[model])
    head: Any
    if model == "logistic":
        head = LogisticRegression(C=float(p["C"]), max_iter=iterations)
    elif model == "mlp":
        head = MLPClassifier(
            hidden_layer_sizes=tuple(p["hidden"]), alpha=float(p["alpha"]), max_iter=iterations, random_state=seed
        )
    else:
        head = HistGradientBoostingClassifier(
            max_iter=iterations,
            learning_rate=float(p["learning_rate"]),
            max_leaf_nodes=int(p["max_leaf_nodes"]),
            random_state=seed,
        )
    encoder: Any = (
        OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        if encoding == "onehot"
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    )
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:  # trees need no scaling, and unscaled inputs keep their split points exact in float32
        parts.append(("numeric", "passthrough" if model == "gbdt" else StandardScaler(), numeric))
    if categorical:
        parts.append(("categorical", encoder, categorical))
    return Pipeline([("prepare", ColumnTransformer(parts)), ("model", head)])


def _frame(arrays: Mapping[str, np.ndarray], rows: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame({name: pd.Series(values[rows], dtype=values.dtype) for name, values in arrays.items()})


def export_columns(
    pipeline: Any,
    arrays: Mapping[str, np.ndarray],
    rows: np.ndarray,
    numeric: Sequence[str],
    *,
    tolerance: float,
) -> tuple[bytes, Parity]:
    """Convert ``pipeline`` with one ``[N, 1]`` input per column (float or string) and check parity on
    ``rows``; outputs ``label`` and ``probabilities`` (no ZipMap)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    from streamml.models.runtime import OnnxModel

    if len(rows) == 0:
        raise ModelError("export needs held-out rows for the parity check")
    types = [(n, FloatTensorType([None, 1]) if n in numeric else StringTensorType([None, 1])) for n in arrays]
    head = pipeline.steps[-1][1]
    try:
        proto = convert_sklearn(
            pipeline,
            initial_types=types,
            options={id(head): {"zipmap": False}},
            target_opset=TARGET_OPSET,
            custom_conversion_functions=_tree_converters(),
        )
    except Exception as exc:
        raise ModelError(f"skl2onnx cannot convert the tabular pipeline: {_first_line(exc)}") from exc
    onnx_bytes = proto.SerializeToString()
    sample = {name: values[rows] for name, values in arrays.items()}
    actual = OnnxModel(onnx_bytes, source="tabular").predict(sample)["probabilities"]
    expected = pipeline.predict_proba(_frame(arrays, rows))
    parity = check_parity(expected, actual, output="probabilities", tolerance=tolerance, what="tabular pipeline")
    return onnx_bytes, parity
