from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pytest

from streamml.errors import ModelError
from streamml.models.recipes import (
    TrainedModel,
    available_recipes,
    get_recipe,
    images_from_column,
    label_array,
    make_windows,
    split_indices,
)
from streamml.models.runtime import OnnxModel

HAS_TORCH = importlib.util.find_spec("torch") is not None
PNG = b"\x89PNG"


def test_builtin_recipes_are_listed() -> None:
    assert {"autoencoder", "gbdt", "classifier", "sequence", "image"} <= set(available_recipes())
    with pytest.raises(ModelError, match="unknown recipe 'nope'"):
        get_recipe("nope")


def test_autoencoder_detects_fraud(trained_autoencoder: TrainedModel) -> None:
    m = trained_autoencoder.metrics
    assert m["roc_auc"] >= 0.9
    assert m["pr_auc"] > 3 * m["baseline_pr_auc"] and m["f1"] > m["baseline_f1"]
    assert sum(map(sum, m["confusion_matrix"])) == m["rows"]
    assert trained_autoencoder.threshold_rule == "best F1 on validation"
    assert trained_autoencoder.parity.max_abs_diff <= 1e-4 and trained_autoencoder.parity.output == "score"
    assert trained_autoencoder.params["hidden"] == [14, 7, 14]
    assert trained_autoencoder.params["positive_label"] == "1"
    names = sorted(p.name for p in trained_autoencoder.plots)
    assert names == ["loss.png", "pr.png", "roc.png", "score_histogram.png"]
    assert all(p.read_bytes().startswith(PNG) for p in trained_autoencoder.plots)


def test_autoencoder_graph_reads_raw_features_and_returns_the_score(
    trained_autoencoder: TrainedModel, fraud: pa.Table
) -> None:
    graph = onnx.load_model_from_string(trained_autoencoder.onnx_bytes)
    assert {"ReduceMean", "Div"} <= {node.op_type for node in graph.graph.node}
    model = OnnxModel(trained_autoencoder.onnx_bytes, feature_names=trained_autoencoder.features)
    assert model.signature.describe() == "X float32[N,30] -> score float32[N]"
    scores = model.predict(fraud.slice(0, 500))["score"]  # raw columns in, score out
    flags = trained_autoencoder.output.postprocess({"score": scores}, trained_autoencoder.threshold)
    is_fraud = np.asarray(fraud.column("Class").to_pylist()[:500]) == "1"
    assert flags.field("is_anomaly").to_numpy(zero_copy_only=False)[is_fraud].mean() > 0.8


def test_gbdt_beats_the_autoencoder(trained_gbdt: TrainedModel, trained_autoencoder: TrainedModel) -> None:
    g, a = trained_gbdt.metrics, trained_autoencoder.metrics
    assert g["roc_auc"] >= a["roc_auc"] and g["pr_auc"] >= a["pr_auc"]
    assert trained_gbdt.parity.max_abs_diff <= 1e-4
    assert trained_gbdt.output.classes == ["0", "1"] and trained_gbdt.output.positive_label == "1"
    assert sorted(p.name for p in trained_gbdt.plots) == ["pr.png", "roc.png", "score_histogram.png"]


def test_precision_floor_threshold_rule(fraud: pa.Table) -> None:
    trained = get_recipe("autoencoder").train(
        fraud, "Class", {"threshold_rule": "precision_floor", "precision_floor": 0.95, "epochs": 40}, 3
    )
    assert "precision >= 0.95" in (trained.threshold_rule or "")
    assert trained.metrics["validation_precision"] >= 0.95 and trained.plots == []
    assert trained.metrics["recall"] > 0.5


def test_classifier_on_iris(iris: pa.Table) -> None:
    trained = get_recipe("classifier").train(iris, "species", {}, 0)
    assert trained.metrics["accuracy"] >= 0.9
    assert trained.parity.max_abs_diff <= 1e-4
    model = OnnxModel(trained.onnx_bytes, feature_names=trained.features)
    raw = np.array([[5.4, 3.9, 1.7, 0.4], [7.0, 3.2, 4.7, 1.4], [4.6, 3.4, 1.4, 0.3]])
    out = model.predict(raw)
    assert list(out["label"]) == ["setosa", "versicolor", "setosa"]
    struct = trained.output.postprocess(out)
    assert struct.field("label").to_pylist() == ["setosa", "versicolor", "setosa"]
    logistic = get_recipe("classifier").train(iris, "species", {"model": "logistic"}, 0)
    assert list(OnnxModel(logistic.onnx_bytes).predict(raw)["label"]) == ["setosa", "versicolor", "setosa"]


def test_unknown_params_and_missing_label_are_refused(iris: pa.Table) -> None:
    with pytest.raises(ModelError, match="no parameter"):
        get_recipe("classifier").train(iris, "species", {"epochz": 3}, 0)
    with pytest.raises(ModelError, match="needs a label"):
        get_recipe("gbdt").train(iris, None, {}, 0)
    with pytest.raises(ModelError, match="exactly two classes"):
        get_recipe("gbdt").train(iris, "species", {}, 0)


def test_plugin_recipe_from_a_python_file(tmp_path: Path) -> None:
    path = tmp_path / "my_recipe.py"
    path.write_text(
        "from streamml.models.recipes.classifier import ClassifierRecipe\n"
        "class Mine(ClassifierRecipe):\n"
        "    name = 'mine'\n"
        "recipe = Mine()\n"
        "other = 42\n"
    )
    assert get_recipe(str(path)).name == "mine"
    with pytest.raises(ModelError, match="is not a recipe"):
        get_recipe(f"{path}:other")
    with pytest.raises(ModelError, match="does not exist"):
        get_recipe(str(tmp_path / "missing.py"))


def test_split_indices_are_seeded_disjoint_and_stratified() -> None:
    labels = np.array(["1"] * 20 + ["0"] * 180, dtype=object)
    a = split_indices(200, seed=5, stratify=labels)
    b = split_indices(200, seed=5, stratify=labels)
    for x, y in ((a.train, b.train), (a.validation, b.validation), (a.test, b.test)):
        assert np.array_equal(x, y)
    joined = np.concatenate([a.train, a.validation, a.test])
    assert np.array_equal(np.sort(joined), np.arange(200))
    assert [int((labels[part] == "1").sum()) for part in (a.train, a.validation, a.test)] == [14, 3, 3]
    by_time = split_indices(10, (0.6, 0.2, 0.2), order=np.arange(10)[::-1])
    assert by_time.test.tolist() == [0, 1] and by_time.train.tolist() == [4, 5, 6, 7, 8, 9]
    with pytest.raises(ModelError, match="split fractions"):
        split_indices(10, (0.5, 0.5))


def test_labels_become_strings() -> None:
    table = pa.table({"i": [0, 1], "f": [0.0, 1.0], "b": [True, False], "s": ["0", "1"]})
    assert label_array(table, "i").tolist() == ["0", "1"]
    assert label_array(table, "f").tolist() == ["0", "1"]
    assert label_array(table, "b").tolist() == ["true", "false"]
    assert label_array(table, "s").tolist() == ["0", "1"]


def test_make_windows_per_key_with_horizon_labels() -> None:
    keys = np.array(["a"] * 6 + ["b"] * 4)
    order = np.array([5, 4, 3, 2, 1, 0, 0, 1, 2, 3])  # key a arrives newest first
    values = np.arange(10, dtype=np.float32).reshape(-1, 1)
    failures = np.zeros(10, dtype=bool)
    failures[0] = True  # the last reading of a (time 5)
    w = make_windows(keys, order, values, failures, window=2, horizon=2)
    # a sorted by time: values 5,4,3,2,1,0 -> windows starting at 0..2; b: 6,7,8,9 -> one window
    assert w.values.shape == (4, 2, 1)
    assert w.keys.tolist() == ["a", "a", "a", "b"] and w.ends.tolist() == [1, 2, 3, 1]
    assert w.values[0, :, 0].tolist() == [5.0, 4.0] and w.values[3, :, 0].tolist() == [6.0, 7.0]
    assert w.labels.tolist() == [False, False, True, False]  # only the last window of a sees the failure
    empty = make_windows(keys[:3], order[:3], values[:3], failures[:3], window=3, horizon=2)
    assert empty.values.shape == (0, 3, 1)


def test_images_from_a_list_column() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    column = pa.array(list(digits.data[:20]))
    images = images_from_column(column, 8, 8)
    assert images.shape == (20, 1, 8, 8) and images.dtype == np.float32
    np.testing.assert_array_equal(images[3, 0].ravel(), digits.data[3])
    with pytest.raises(ModelError, match="exactly 8x8"):
        images_from_column(pa.array([[1.0, 2.0]]), 8, 8)


@pytest.mark.skipif(HAS_TORCH, reason="checks the message shown when torch is missing")
@pytest.mark.parametrize("name", ["sequence", "image"])
def test_torch_recipes_need_the_extra(name: str, iris: pa.Table) -> None:
    with pytest.raises(ModelError, match=r"pip install 'streamml\[torch\]'"):
        get_recipe(name).train(iris, "species", {}, 0)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_image_recipe_on_digits(tmp_path: Path) -> None:  # pragma: no cover - runs only with the torch extra
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pa.table({"pixels": list(digits.data[:900]), "digit": digits.target[:900]})
    trained = get_recipe("image").train(table, "digit", {"epochs": 15}, 0, plot_dir=tmp_path)
    assert trained.metrics["accuracy"] >= 0.9 and trained.parity.passed
    assert trained.parity.max_abs_diff <= 1e-4
    # per class and per epoch, as the card's plots show them
    per_class = trained.metrics["per_class_accuracy"]
    assert sorted(per_class) == [str(d) for d in range(10)] and min(per_class.values()) > 0.5
    curves = trained.metrics["accuracy_per_epoch"]
    assert len(curves["train"]) == len(curves["test"]) == trained.metrics["epochs"]
    assert curves["train"][-1] > curves["train"][0]  # it learned
    assert {p.name for p in trained.plots} >= {"accuracy.png", "per_class_accuracy.png", "confusion.png"}


def car_sensors(cars: int = 16, readings: int = 400, seed: int = 0, drift_len: int = 15) -> pa.Table:
    """Car-like telemetry: failures at random times, each preceded by ``drift_len`` readings of drifting sensors.

    Before a failure the engine heats up, oil pressure sags and vibration grows; after it, the car is
    repaired and readings return to normal. Sensors are noisy, so the drift is only visible over a window.
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("car", "t", "engine_temp", "oil_pressure", "vibration", "failure")
    }
    for car in range(cars):
        failure = np.zeros(readings, dtype=bool)
        failure[rng.choice(np.arange(60, readings - 5, 70), size=4, replace=False) + rng.integers(0, 30, 4)] = True
        drift = np.zeros(readings)
        ramp = np.arange(1, drift_len + 1) / drift_len
        for at in np.flatnonzero(failure):
            lo = max(0, at + 1 - drift_len)
            drift[lo : at + 1] = ramp[drift_len - (at + 1 - lo) :]
        columns["car"].append(np.full(readings, car))
        columns["t"].append(np.arange(readings))
        columns["engine_temp"].append(90 + 12 * drift + rng.normal(0, 2.0, readings))
        columns["oil_pressure"].append(3.0 - 0.8 * drift + rng.normal(0, 0.15, readings))
        columns["vibration"].append(0.2 + 0.5 * drift**2 + np.abs(rng.normal(0, 0.08, readings)))
        columns["failure"].append(failure.astype(int))
    return pa.table({k: np.concatenate(v) for k, v in columns.items()})


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_sequence_recipe_on_car_sensors() -> None:  # pragma: no cover - runs only with the torch extra
    # windows ending 11-15 readings before a failure already drift but are labelled "no failure within 10":
    # that boundary caps precision, so the bar is "far above chance", not perfection
    params = {"key_column": "car", "time_column": "t", "window": 10, "horizon": 10, "epochs": 20, "hidden": 16}
    trained = get_recipe("sequence").train(car_sensors(), "failure", params, 0)
    m = trained.metrics
    assert m["positives"] > 50 and m["roc_auc"] >= 0.9
    assert m["precision"] >= 0.45 and m["recall"] >= 0.8 and m["f1"] >= 0.6 and m["f1"] > 3 * m["baseline_f1"]
    assert trained.parity.passed and trained.features == ["engine_temp", "oil_pressure", "vibration"]
    model = OnnxModel(trained.onnx_bytes)
    assert model.signature.inputs[0].shape is not None and list(model.signature.inputs[0].shape[1:]) == [10, 3]


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_recipes_are_reproducible() -> None:  # pragma: no cover - runs only with the torch extra
    import torch

    params = {"key_column": "car", "time_column": "t", "window": 5, "horizon": 5, "epochs": 2, "hidden": 8}
    data = car_sensors(cars=4)
    runs = []
    for disturb in (1, 2):
        torch.manual_seed(disturb)  # global RNG state must not leak into the initial weights
        runs.append(get_recipe("sequence").train(data, "failure", params, 7))
    assert runs[0].metrics["roc_auc"] == runs[1].metrics["roc_auc"]
    assert runs[0].onnx_bytes == runs[1].onnx_bytes


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_sequence_recipe_on_synthetic_machines() -> None:  # pragma: no cover - runs only with the torch extra
    rng = np.random.default_rng(0)
    rows, machines = 3000, 10
    key = np.repeat(np.arange(machines), rows // machines)
    t = np.tile(np.arange(rows // machines), machines)
    wear = (t % 100) / 100.0
    failure = (t % 100) == 99
    table = pa.table(
        {"machine": key, "t": t, "temp": wear + 0.05 * rng.standard_normal(rows), "fail": failure.astype(int)}
    )
    params = {"key_column": "machine", "time_column": "t", "window": 10, "horizon": 10, "epochs": 10}
    trained = get_recipe("sequence").train(table, "fail", params, 0)
    assert trained.metrics["roc_auc"] >= 0.8 and trained.parity.passed
