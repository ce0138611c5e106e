"""Gradient-boosted trees trained elsewhere: XGBoost (``.json``/``.ubj``) and LightGBM (``.txt``) boosters to
ONNX with onnxmltools, checked against the booster's own predictions (optional extra ``streamml[gbm]``).

A binary classifier compares its P(class 1) with the graph's ``probabilities[:, 1]``; a multiclass one all
its probabilities; a regressor its values with the graph's first output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamml.errors import ModelError
from streamml.models.card import Parity
from streamml.models.export import Exported
from streamml.models.runtime import OnnxModel

#: file suffix -> framework
BOOSTERS = {".json": "xgboost", ".ubj": "xgboost", ".txt": "lightgbm"}
_OPSET = 15


def export_booster(path: Path, sample: np.ndarray, tolerance: float = 1e-4) -> Exported:
    """The ONNX artifact of the booster saved at ``path`` (its framework from the suffix), checked on
    ``sample`` (its rows, its width the number of features)."""
    framework = BOOSTERS[path.suffix.lower()]
    try:
        from onnxmltools import convert_lightgbm, convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        module: Any = __import__(framework)
    except ImportError as exc:
        raise ModelError(f"converting a {framework} booster needs onnxmltools and {framework}",
                         hint="pip install 'streamml[gbm]'") from exc  # fmt: skip
    x = np.ascontiguousarray(sample, dtype=np.float32)
    inputs = [("input", FloatTensorType([None, x.shape[1]]))]
    try:
        if framework == "xgboost":
            booster = module.Booster()
            booster.load_model(str(path))
            expected = np.asarray(booster.predict(module.DMatrix(x)))
            proto = convert_xgboost(booster, initial_types=inputs, target_opset=_OPSET)
        else:
            booster = module.Booster(model_file=str(path))
            expected = np.asarray(booster.predict(x))
            proto = convert_lightgbm(booster, initial_types=inputs, target_opset=_OPSET, zipmap=False)
    except Exception as exc:  # a file that is no booster, or one the converter does not cover
        raise ModelError(f"'{path.name}' could not be converted from {framework}: {str(exc).splitlines()[0]}") from exc
    data = proto.SerializeToString()
    outputs = OnnxModel(data, source=path.name).predict(x)
    name = "probabilities" if "probabilities" in outputs else next(iter(outputs))
    got = np.asarray(outputs[name], dtype=np.float64)
    if expected.ndim == 1 and got.ndim == 2 and got.shape[1] == 2:
        got = got[:, 1]  # a binary classifier's booster predicts P(class 1)
    got = got.reshape(expected.shape)
    diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
    if not diff <= tolerance:
        raise ModelError(f"the ONNX graph of '{path.name}' differs from {framework} by {diff:.3g} (> {tolerance:g})")
    return Exported(data, Parity(max_abs_diff=diff, tolerance=tolerance, rows=len(x), output=name), framework,
                    str(module.__version__))  # fmt: skip
