from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamml.errors import ModelError
from streamml.models.runtime import OnnxModel, select_providers

WEIGHTS = np.array([1.0, -2.0, 0.5])


def expected(x: np.ndarray) -> np.ndarray:
    return x @ WEIGHTS + 3.0


def test_signature_names_dtypes_and_shapes(linear_onnx: bytes) -> None:
    model = OnnxModel(linear_onnx)
    (spec,) = model.signature.inputs
    assert (spec.name, spec.dtype) == ("X", "float32")
    assert spec.shape is not None and spec.shape[1] == 3 and not isinstance(spec.shape[0], int)
    assert model.output_names == ["variable"]
    assert model.signature.describe().startswith("X float32[N,3] -> variable float32")


def test_predict_2d_array_casts_to_float32(linear_onnx: bytes) -> None:
    x = np.random.default_rng(0).standard_normal((257, 3))  # float64 in, no per-row work
    out = OnnxModel(linear_onnx).predict(x)
    assert set(out) == {"variable"}
    np.testing.assert_allclose(out["variable"].ravel(), expected(x), atol=1e-4)


def test_predict_columns_mapping_and_arrow_table(linear_onnx: bytes) -> None:
    x = np.random.default_rng(1).standard_normal((10, 3))
    model = OnnxModel(linear_onnx, feature_names=["a", "b", "c"])
    by_position = model.predict([x[:, 0], x[:, 1], pa.array(x[:, 2])])["variable"]
    # mapping order differs from the model's feature order: names decide
    by_name = model.predict({"c": x[:, 2], "a": x[:, 0], "b": x[:, 1]})["variable"]
    table = pa.table({"b": x[:, 1], "extra": np.zeros(10), "a": x[:, 0], "c": x[:, 2]})
    by_table = model.predict(table)["variable"]
    for got in (by_position, by_name, by_table):
        np.testing.assert_allclose(got.ravel(), expected(x), atol=1e-4)


def test_arrow_nulls_become_nan(linear_onnx: bytes) -> None:
    model = OnnxModel(linear_onnx, feature_names=["a", "b", "c"])
    out = model.predict({"a": pa.array([1.0, None]), "b": pa.array([0, 1]), "c": pa.array([0.0, 0.0])})
    assert np.isnan(out["variable"][1, 0]) and np.isfinite(out["variable"][0, 0])


def test_missing_columns_are_named(linear_onnx: bytes) -> None:
    model = OnnxModel(linear_onnx, feature_names=["a", "b", "c"])
    with pytest.raises(ModelError, match=r"needs columns \['c'\]"):
        model.predict({"a": np.zeros(2), "b": np.zeros(2)})


def test_load_from_path_with_threads(linear_onnx: bytes, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(linear_onnx)
    model = OnnxModel.load(path, threads=2)
    assert model.source == str(path)
    assert model.providers == ["CPUExecutionProvider"]
    assert model.predict(model.zeros(3))["variable"].shape == (3, 1)


@pytest.mark.parametrize("content", [b"", b"not an onnx model", None])
def test_corrupt_file_is_refused_naming_the_file(linear_onnx: bytes, tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(linear_onnx[: len(linear_onnx) // 2] if content is None else content)
    with pytest.raises(ModelError, match=r"broken\.onnx"):
        OnnxModel.load(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.onnx"):
        OnnxModel.load(tmp_path / "nope.onnx")


def test_provider_selection() -> None:
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    assert select_providers("auto")[-1] == "CPUExecutionProvider"
    assert select_providers("cuda")[-1] == "CPUExecutionProvider"  # falls back when CUDA is absent
    assert select_providers(providers=["X"]) == ["X"]
    with pytest.raises(ModelError, match="unknown inference device"):
        select_providers("tpu")
