"""PREDICT with a sequence model OVER a window of readings per car, without a broker."""

from __future__ import annotations

import numpy as np
import pytest

from streamml.errors import SqlError
from streamml.ingest.cars import CarFleet
from streamml.models.recipes import make_windows
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.runtime.predict import ModelProvider
from streamml.sql import SqlEngine

pytest.importorskip("torch")

FEATURES = ["coolant_temp", "engine_vibration_amplitude", "tire_pressure_1_1", "accelerometer_1_1_value"]
WINDOW = 6


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    reg = Registry(str(tmp_path_factory.mktemp("registry")))
    table = CarFleet(12, seed=3, failure_rates={"overheating": 0.01}).readings(150)
    table = table.select(["car", "time", *FEATURES, "failure_occurred"])
    params = {"key_column": "car", "time_column": "time", "window": WINDOW, "horizon": 5, "epochs": 2, "hidden": 8}
    train_table("sequence", table, "failure_occurred", params, name="car-failure", registry=reg)
    return reg


@pytest.fixture
def engine(registry: Registry) -> SqlEngine:
    engine = SqlEngine()
    ModelProvider(registry).install(engine)
    columns = ", ".join(f"{f} DOUBLE" for f in FEATURES)
    engine.execute(f"CREATE STREAM cars (car VARCHAR KEY, {columns}) WITH (KAFKA_TOPIC='c', VALUE_FORMAT='JSON');")
    return engine


def test_predict_over_scores_the_last_readings_of_each_car(engine: SqlEngine, registry: Registry) -> None:
    readings = CarFleet(5, seed=11).readings(30)
    plan = engine.plan(
        "SELECT car, PREDICT('car-failure') OVER (PARTITION BY car)->probabilities[2] AS p FROM cars EMIT CHANGES;"
    )
    assert f"ROWS {WINDOW - 1} PRECEDING" in plan.explain()
    executor = plan.executor()
    got: list[float | None] = []
    for lo in range(0, readings.num_rows, 40):  # a window spans several batches
        got += executor.execute(readings.slice(lo, 40)).table.column("P").to_pylist()
    cars = readings.column("car").to_numpy(zero_copy_only=False)
    rank = readings.column("time").to_numpy()
    values = np.column_stack([readings.column(f).to_numpy() for f in FEATURES])
    windows = make_windows(cars, rank, values, np.zeros(len(cars), bool), WINDOW, 1)
    model = registry.get("car-failure").load()
    expected = model.predict(windows.values)["probability"].reshape(-1)
    scored = np.array([p is not None for p in got])
    assert int(scored.sum()) == 5 * (30 - WINDOW + 1)
    assert int((~scored).sum()) == 5 * (WINDOW - 1)  # the first readings of each car are not scored yet
    by_row = dict(zip(zip(windows.keys.tolist(), windows.ends.tolist(), strict=True), expected, strict=True))
    ours = {(c, r): p for c, r, p in zip(cars.tolist(), rank.tolist(), got, strict=True) if (c, r) in by_row}
    assert len(ours) == len(by_row) == int(scored.sum()) - 5  # make_windows leaves out each car's last window
    np.testing.assert_allclose([ours[k] for k in by_row], list(by_row.values()), rtol=1e-5, atol=1e-6)


def test_a_sequence_model_is_called_over_a_window_of_its_length(engine: SqlEngine) -> None:
    with pytest.raises(SqlError, match="reads windows of 6 readings") as caught:
        engine.plan("SELECT car, PREDICT('car-failure') AS p FROM cars;")
    assert caught.value.hint is not None and "ROWS 5 PRECEDING" in caught.value.hint
    with pytest.raises(SqlError, match="this frame has 3"):
        engine.plan("SELECT car, PREDICT('car-failure') OVER (PARTITION BY car ROWS 2 PRECEDING) AS p FROM cars;")


def test_a_model_alias_can_be_called_over_a_window(engine: SqlEngine) -> None:
    engine.execute("CREATE FUNCTION FAILURE_RISK AS PREDICT('car-failure')->probability;")
    plan = engine.plan("SELECT car, FAILURE_RISK() OVER (PARTITION BY car) AS risk FROM cars;")
    readings = CarFleet(2, seed=1).readings(WINDOW)
    risks = plan.executor().execute(readings).table.column("RISK").to_pylist()
    assert risks[:-2] == [None] * (2 * WINDOW - 2) and all(0.0 <= r <= 1.0 for r in risks[-2:])
