"""The sequence recipe on the car fleet simulator: failure prediction, lead time, time split and windows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from streamml.ingest.cars import CarFleet
from streamml.models.recipes import get_recipe
from streamml.models.recipes.base import TrainedModel
from streamml.models.recipes.evaluation import lead_time_metrics
from streamml.models.recipes.sequence import NO_FAILURE, lead_times, make_windows, time_split
from streamml.models.recipes.torch_support import torch_available
from streamml.models.runtime import OnnxModel

needs_torch = pytest.mark.skipif(not torch_available(), reason="torch is not installed")
FEATURES = 18  # the 17 sensor readings and the firmware version (constant per car, informs how often it fails)


@pytest.fixture(scope="module")
def fleet() -> pa.Table:
    return CarFleet(25, seed=3).readings(3000)


@pytest.fixture(scope="module")
def trained(fleet: pa.Table) -> TrainedModel:
    params = {"key_column": "car", "time_column": "time"}  # the recipe's defaults otherwise
    return get_recipe("sequence").train(fleet, "failure_occurred", params, 0)


@needs_torch
def test_predicts_failures_within_the_horizon_on_the_newest_readings(trained: TrainedModel) -> None:
    m = trained.metrics
    assert trained.params["window"] == 20 and trained.params["horizon"] == 20
    assert m["positives"] > 500 and m["f1"] >= 0.8 and m["precision"] >= 0.75 and m["recall"] >= 0.75
    assert m["f1"] > 3 * m["baseline_f1"] and m["roc_auc"] >= 0.9


@needs_torch
def test_reports_how_early_failures_are_flagged(trained: TrainedModel) -> None:
    m = trained.metrics
    assert m["failures"] >= 30 and m["failures_caught"] >= 0.9
    assert 5 <= m["lead_time_median"] <= 20 and 5 <= m["lead_time_mean"] <= 20  # at most the horizon ahead


@needs_torch
def test_the_graph_takes_raw_windows(trained: TrainedModel, fleet: pa.Table) -> None:
    model = OnnxModel(trained.onnx_bytes)
    spec = model.signature.inputs[0]
    assert spec.dtype == "float32" and spec.shape is not None
    assert not isinstance(spec.shape[0], int) and list(spec.shape[1:]) == [20, FEATURES]
    assert trained.parity.passed and trained.parity.max_abs_diff <= 1e-4
    assert len(trained.features) == FEATURES and "control_unit_firmware" in trained.features
    car = fleet.filter(pa.compute.equal(fleet.column("car"), "car1")).slice(0, 20)
    raw = np.column_stack([car.column(c).to_numpy().astype(np.float32) for c in trained.features])
    probability = model.predict(raw[None])["probability"]  # unscaled readings in, probability out
    assert probability.shape[0] == 1 and 0.0 <= float(probability.reshape(-1)[0]) <= 1.0


def test_windows_know_the_distance_to_the_next_failure() -> None:
    keys = np.array([0] * 8 + [1] * 8)
    order = np.tile(np.arange(8), 2)
    failures = np.zeros(16, bool)
    failures[[5, 15]] = True  # key 0 fails at its reading 5, key 1 at its last reading
    w = make_windows(keys, order, order.astype(np.float32), failures, window=3, horizon=2)
    # key 0: windows ending at readings 2, 3, 4 (5 is the failure itself, then too few readings follow)
    assert w.keys.tolist() == [0, 0, 0, 1, 1, 1, 1] and w.ends.tolist() == [2, 3, 4, 2, 3, 4, 5]
    assert w.to_failure.tolist() == [3, 2, 1, 5, 4, 3, 2]
    assert w.labels.tolist() == [False, True, True, False, False, False, True]
    assert w.failure.tolist() == [5, 5, 5, 15, 15, 15, 15]
    assert w.label_ends.tolist() == [4, 5, 6, 4, 5, 6, 7]
    none = make_windows(keys[:8], order[:8], order[:8].astype(np.float32), np.zeros(8, bool), 3, 2)
    assert (none.to_failure == NO_FAILURE).all() and (none.failure == -1).all() and not none.labels.any()


def test_time_split_keeps_the_newest_windows_for_testing() -> None:
    keys = np.repeat(np.arange(3), 200)
    order = np.tile(np.arange(200), 3)
    failures = (order % 37 == 36) & (keys != 1)
    w = make_windows(keys, order, np.zeros(600, np.float32), failures, window=5, horizon=4)
    parts = time_split(w, [0.7, 0.15, 0.15])
    assert w.label_ends[parts.train].max() < w.ends[parts.validation].min()
    assert w.label_ends[parts.validation].max() < w.ends[parts.test].min()
    positive_ends = np.sort(w.ends[w.labels])  # cut where 85% of the failure windows have passed
    assert w.ends[parts.test].min() == positive_ends[round(0.85 * len(positive_ends))]
    assert w.labels[parts.validation].any() and w.labels[parts.test].any()
    assert len(parts.test) + len(parts.validation) + len(parts.train) > 0.95 * len(w.ends)
    assert len(time_split(w, [0.85, 0.15, 0.0]).test) == 0


def test_lead_time_is_the_first_alert_before_each_failure() -> None:
    failure = np.array([7, 7, 7, 9, 9, 9, 4, 4])
    lead = np.array([3, 2, 1, 3, 2, 1, 2, 1])
    alert = np.array([False, True, True, False, False, False, True, False])
    m = lead_time_metrics(failure, lead, alert)
    assert m == {"failures": 3, "failures_caught": 2 / 3, "lead_time_median": 2.0, "lead_time_mean": 2.0}
    assert lead_time_metrics(failure[:0], lead[:0], alert[:0])["failures_caught"] is None


def test_lead_times_count_only_failures_whose_horizon_is_evaluated() -> None:
    keys = np.zeros(30, int)
    order = np.arange(30)
    failures = np.zeros(30, bool)
    failures[[12, 25]] = True
    w = make_windows(keys, order, np.zeros(30, np.float32), failures, window=3, horizon=4)
    rows = np.flatnonzero(w.ends >= 10)  # cuts into the horizon of the failure at 12 (windows ending 8..11)
    m = lead_times(w, rows, np.ones(len(rows), bool), horizon=4)
    assert m["failures"] == 1 and m["failures_caught"] == 1.0 and m["lead_time_median"] == 4.0
