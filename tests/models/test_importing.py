"""Bringing your own model: each format built here, imported, converted to ONNX and checked for parity."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from streamml.errors import InputError, ModelError
from streamml.models.importing import import_model, keras_without_tensorflow, read_sample
from streamml.models.registry import Registry

FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    path = tmp_path / "sample.csv"
    pacsv.write_csv(pa.table({f: x[:, i] for i, f in enumerate(FEATURES)}), path)
    return path


def _xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(int)


def _import(tmp_path: Path, model: Path, sample: Path | None, **options: object):  # type: ignore[no-untyped-def]
    registry = Registry(str(tmp_path / "registry"))
    table = read_sample(sample) if sample is not None else None
    return import_model(registry, model, name="byo", sample=table, **options)  # type: ignore[arg-type]


def test_scikit_learn_pickle_needs_trust_then_matches(tmp_path: Path, sample: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _xy()
    path = tmp_path / "pipeline.joblib"
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), path)
    with pytest.raises(ModelError, match="refusing to unpickle"):
        _import(tmp_path, path, sample)
    version = _import(tmp_path, path, sample, trust=True)
    assert version.card.framework == "scikit-learn" and version.card.features == FEATURES
    assert version.card.parity is not None and version.card.parity.max_abs_diff <= 1e-4
    assert version.card.reference is not None and set(FEATURES) <= set(version.card.reference.features)


def test_onnx_is_checked_and_its_width_must_match_the_sample(tmp_path: Path, sample: Path) -> None:
    from sklearn.linear_model import LinearRegression

    from streamml.models.export import export_sklearn

    x, y = _xy()
    path = tmp_path / "model.onnx"
    path.write_bytes(export_sklearn(LinearRegression().fit(x, y.astype(float)), x).onnx_bytes)
    version = _import(tmp_path, path, sample)
    assert version.card.features == FEATURES and version.card.reference is not None
    three = tmp_path / "three.csv"
    pacsv.write_csv(pa.table({f: np.zeros(5) for f in FEATURES[:3]}), three)
    with pytest.raises(InputError, match="the sample has 3 columns, the model reads 4"):
        _import(tmp_path, path, three)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        _import(tmp_path, broken, sample)


def _torch_module():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2), torch.nn.Softmax(-1))


def test_torchscript_and_exported_programs(tmp_path: Path, sample: Path) -> None:
    import torch

    module = _torch_module().eval()
    scripted = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(module), str(scripted))
    exported = tmp_path / "model.pt2"
    batch = {"input": {0: torch.export.Dim("batch")}}  # any number of rows, as a stream's batches come
    torch.export.save(torch.export.export(module, (torch.zeros(3, 4),), dynamic_shapes=batch), str(exported))
    for path in (scripted, exported):
        version = _import(tmp_path, path, sample)
        assert version.card.framework == "torch" and version.card.parity is not None
        assert version.card.parity.max_abs_diff <= 1e-4, path
    with pytest.raises(InputError, match="pass a sample"):
        _import(tmp_path, scripted, None)


def test_keras_models_on_the_pytorch_backend(tmp_path: Path, sample: Path) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    with keras_without_tensorflow():
        keras = pytest.importorskip("keras")
        # like the fraud demo's: an activity regularizer adds a training loss (tracing it must not fix the batch)
        l1 = keras.regularizers.l1(1e-5)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(14, activation="tanh", activity_regularizer=l1),
                                  keras.layers.Dense(7, activation="tanh"), keras.layers.Dense(4)])  # fmt: skip
        model.save(tmp_path / "autoencoder.keras")
        model.save(tmp_path / "autoencoder.h5")
    for name in ("autoencoder.keras", "autoencoder.h5"):
        version = _import(tmp_path, tmp_path / name, sample)
        assert version.card.parity is not None and version.card.parity.max_abs_diff <= 1e-4, name
        x = read_sample(sample)
        expected = np.asarray(model.predict(np.column_stack([x.column(f) for f in FEATURES]), verbose=0))
        actual = version.load().predict(np.column_stack([x.column(f) for f in FEATURES]).astype(np.float32))
        assert np.abs(next(iter(actual.values())) - expected).max() <= 1e-4

    # the same model as an autoencoder: the reconstruction error is in the graph, the threshold from the sample
    version = _import(tmp_path, tmp_path / "autoencoder.keras", sample, autoencoder=True, threshold_quantile=0.9)
    x = read_sample(sample)
    rows = np.column_stack([x.column(f) for f in FEATURES]).astype(np.float32)
    error = ((rows - np.asarray(model.predict(rows, verbose=0))) ** 2).mean(axis=1)
    scored = version.load().predict(rows)["score"]
    assert np.abs(scored - error).max() <= 1e-5
    assert version.card.threshold == pytest.approx(float(np.quantile(scored.astype(np.float64), 0.9)))
    assert version.card.sql_type == "STRUCT<score DOUBLE, is_anomaly BOOLEAN>"
    flags = version.card.output.postprocess({"score": scored}, version.card.threshold).field("is_anomaly")
    assert sum(flags.to_pylist()) == int((scored >= version.card.threshold).sum()) > 0
    with pytest.raises(ModelError, match="not an autoencoder"):
        narrow = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        narrow.save(tmp_path / "narrow.keras")
        _import(tmp_path, tmp_path / "narrow.keras", sample, autoencoder=True)


def test_formats_without_a_converter_here_are_refused_with_what_they_need(tmp_path: Path, sample: Path) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ModelError, match="TensorFlow SavedModel") as tf:
        _import(tmp_path, saved, sample)
    assert "tf2onnx" in (tf.value.hint or "")
    with pytest.raises(InputError, match="cannot tell the framework"):
        _import(tmp_path, sample, sample)


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_boosters_from_xgboost_and_lightgbm(tmp_path: Path, sample: Path, framework: str, task: str) -> None:
    """A booster saved by its framework converts with onnxmltools, its predictions matched on the sample."""
    pytest.importorskip("onnxmltools")
    module = pytest.importorskip(framework)
    x, y = _xy()
    y = {"binary": y, "multiclass": (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5), "regression": x[:, 0] * 2.0}[task]
    estimator = {
        ("xgboost", True): lambda: module.XGBClassifier(n_estimators=8, max_depth=3),
        ("xgboost", False): lambda: module.XGBRegressor(n_estimators=8, max_depth=3),
        ("lightgbm", True): lambda: module.LGBMClassifier(n_estimators=8, verbose=-1),
        ("lightgbm", False): lambda: module.LGBMRegressor(n_estimators=8, verbose=-1),
    }[(framework, task != "regression")]().fit(x, y)
    path = tmp_path / ("booster.json" if framework == "xgboost" else "booster.txt")
    (estimator if framework == "xgboost" else estimator.booster_).save_model(str(path))
    version = _import(tmp_path, path, sample)
    assert version.card.framework == framework and version.card.parity is not None
    assert version.card.parity.max_abs_diff <= 1e-4 and version.card.features == FEATURES
    rows = np.column_stack([read_sample(sample).column(f) for f in FEATURES]).astype(np.float32)
    out = version.load().predict(rows)
    if task == "regression":
        assert np.abs(next(iter(out.values())).reshape(-1) - estimator.predict(rows)).max() <= 1e-4
    else:
        assert np.abs(out["probabilities"] - estimator.predict_proba(rows)).max() <= 1e-4
    (tmp_path / "broken.txt").write_text("not a booster")
    with pytest.raises(ModelError, match="could not be converted"):
        _import(tmp_path, tmp_path / "broken.txt", sample)


def test_the_import_command(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, sample: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    x, y = _xy()
    path = tmp_path / "model.pkl"
    joblib.dump(LogisticRegression().fit(x, y), path)
    refused = cli("models", "import", str(path), "--name", "byo", "--sample", str(sample), check=False)
    assert refused.returncode != 0 and "--trust" in refused.stderr and "Traceback" not in refused.stderr
    done = cli("models", "import", str(path), "--name", "byo", "--sample", str(sample), "--trust", "--promote")
    assert "imported model.pkl as byo:1" in done.stdout and "byo@production -> 1" in done.stdout
    assert "f0" in cli("models", "show", "byo").stdout
