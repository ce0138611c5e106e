"""Two small models for the TF Serving tests: a census-like classifier that takes one input per column (floats
and strings, ``[N, 1]`` each) and a regression model with one ``[N, 3]`` input."""

from __future__ import annotations

import numpy as np

from streamml.models.card import ModelCard, OutputSpec
from streamml.models.registry import Registry

CENSUS_NUMERIC = ["age", "hours_per_week"]
CENSUS_TEXT = ["workclass"]
CENSUS_CLASSES = ["<=50K", ">50K"]
#: (age, hours_per_week, workclass) -> the class the model must give
CENSUS_CASES = [((25.0, 20.0, "Private"), "<=50K"), ((55.0, 60.0, "Self-emp"), ">50K")]
WIDTH_FEATURES = ["sepal_length", "sepal_width", "petal_length"]


def register_census(registry: Registry) -> None:
    """``census``: per-column inputs, labels ``<=50K`` / ``>50K``."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(7)
    n = 600
    frame = pd.DataFrame(
        {
            "age": rng.uniform(18, 70, n).astype(np.float32),
            "hours_per_week": rng.uniform(10, 70, n).astype(np.float32),
            "workclass": rng.choice(["Private", "State-gov", "Self-emp"], n),
        }
    )
    score = 0.1 * (frame["age"] - 42) + 0.1 * (frame["hours_per_week"] - 40) + 2.0 * (frame["workclass"] == "Self-emp")
    labels = np.where(score > 0, CENSUS_CLASSES[1], CENSUS_CLASSES[0])
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), CENSUS_NUMERIC),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), CENSUS_TEXT),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(frame, labels)
    types = [(c, FloatTensorType([None, 1])) for c in CENSUS_NUMERIC] + [
        (c, StringTensorType([None, 1])) for c in CENSUS_TEXT
    ]
    onnx = convert_sklearn(model, initial_types=types, options={id(model.steps[-1][1]): {"zipmap": False}})
    outputs = [o.name for o in onnx.graph.output]
    card = ModelCard(
        name="census",
        features=CENSUS_NUMERIC + CENSUS_TEXT,
        label="income",
        output=OutputSpec.classifier(list(model.classes_), probability_output=outputs[-1]),
    )
    registry.register("census", onnx.SerializeToString(), card)


def register_width(registry: Registry) -> None:
    """``width``: a linear regression of petal width on three iris measurements."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LinearRegression

    from streamml.models.export import export_sklearn

    data = load_iris().data.astype(np.float32)
    x, y = data[:, :3], data[:, 3]
    exported = export_sklearn(LinearRegression().fit(x, y), x[:20])
    card = ModelCard(
        name="width",
        features=WIDTH_FEATURES,
        label="petal_width",
        output=OutputSpec.regression(),
        parity=exported.parity,
    )
    registry.register("width", exported.onnx_bytes, card)


def tabular_registry(root: str) -> Registry:
    registry = Registry(root)
    register_census(registry)
    register_width(registry)
    for name in ("census", "width"):
        registry.promote(name, 1)
    return registry
