from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import onnx
import pytest

from streamml.errors import ModelError
from streamml.models.export import (
    check_parity,
    export_keras,
    export_sklearn,
    export_torch,
    import_onnx,
    import_sklearn,
)
from streamml.models.graph import reconstruction_scorer
from streamml.models.runtime import OnnxModel

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_KERAS = importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("tf2onnx") is not None


@pytest.fixture(scope="module")
def iris_xy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data.astype(np.float32), np.asarray(data.target_names)[data.target]


def test_sklearn_classifier_export_records_parity(iris_xy: tuple[np.ndarray, np.ndarray]) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = iris_xy
    model = LogisticRegression(max_iter=500).fit(x, y)
    exported = export_sklearn(model, x[::10])
    assert exported.framework == "scikit-learn"
    assert exported.parity.passed and exported.parity.max_abs_diff <= 1e-4
    assert exported.parity.output == "probabilities" and exported.parity.rows == 15
    out = OnnxModel(exported.onnx_bytes).predict(x[:3])
    assert list(out["label"]) == ["setosa"] * 3


def test_failed_parity_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="parity check"):
        check_parity(np.zeros(4), np.full(4, 1e-3), output="score")


def test_import_onnx_validates(linear_onnx: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(linear_onnx)
    exported = import_onnx(path)
    assert exported.onnx_bytes == linear_onnx and exported.parity.passed
    path.write_bytes(linear_onnx[:-20])
    with pytest.raises(ModelError, match=r"m\.onnx"):
        import_onnx(path)


def test_unpickling_requires_trust(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    x = np.random.default_rng(0).standard_normal((30, 2))
    path = tmp_path / "model.joblib"
    joblib.dump(LinearRegression().fit(x, x.sum(axis=1)), path)
    with pytest.raises(ModelError, match="refusing to unpickle"):
        import_sklearn(path)
    exported = import_sklearn(path, trust=True)
    assert exported.parity.passed
    buffer = io.BytesIO(b"garbage")
    with pytest.raises(ModelError, match="cannot unpickle"):
        import_sklearn(buffer.getvalue(), trust=True)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_reconstruction_scorer_computes_mse_in_the_graph() -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 4)).astype(np.float32) * 3 + 1
    mean, scale = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / scale
    net = MLPRegressor(hidden_layer_sizes=(2,), max_iter=20, random_state=0).fit(z, z)
    inner = to_onnx(net, initial_types=[("z", FloatTensorType([None, 4]))], target_opset={"": 17, "ai.onnx.ml": 3})
    model = reconstruction_scorer(inner, mean, scale, keep_reconstruction=True)
    ops = {node.op_type for node in model.graph.node}
    assert {"Sub", "Div", "Mul", "ReduceMean"} <= ops
    onnx.checker.check_model(model)
    out = OnnxModel(model.SerializeToString()).predict(x)
    reference = ((net.predict(z.astype(np.float64)) - z) ** 2).mean(axis=1)
    np.testing.assert_allclose(out["score"], reference, atol=1e-4)
    assert out["ae_reconstruction"].shape == (200, 4)


@pytest.mark.skipif(HAS_TORCH, reason="checks the message shown when torch is missing")
def test_torch_missing_gives_install_hint() -> None:
    with pytest.raises(ModelError, match=r"streamml\[torch\]"):
        export_torch(object(), np.zeros((1, 2)))


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_export_parity() -> None:  # pragma: no cover - runs only with the torch extra
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    exported = export_torch(module, np.random.default_rng(0).standard_normal((8, 4)))
    assert exported.parity.passed and exported.framework == "torch"


@pytest.mark.skipif(HAS_KERAS, reason="checks the message shown when tensorflow/tf2onnx are missing")
def test_keras_missing_gives_install_hint() -> None:
    with pytest.raises(ModelError, match="tf2onnx"):
        export_keras(object(), np.zeros((1, 2)))
