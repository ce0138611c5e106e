"""A worker scoring per-car windows with a sequence model, killed with SIGKILL mid-stream and restarted: the
windows are restored from the changelog, so every reading is scored once and exactly as without the crash."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamml.ingest.cars import CarFleet
from streamml.kafka import Admin, Producer
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.runtime.predict import ModelProvider
from streamml.sql import SqlEngine
from tests.cli.test_run_cli import read_all, start_runner, wait_output

pytestmark = [pytest.mark.broker, pytest.mark.slow]
pytest.importorskip("torch")

FEATURES = ["coolant_temp", "engine_vibration_amplitude", "tire_pressure_1_1", "accelerometer_1_1_value"]
COLUMNS = ", ".join(f"{f} DOUBLE" for f in FEATURES)
WINDOW = 8


def predictions_sql(source: str, sink: str) -> str:
    return (
        f"CREATE STREAM readings (car VARCHAR KEY, {COLUMNS}) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');\n"
        f"CREATE STREAM predictions WITH (KAFKA_TOPIC='{sink}') AS SELECT car, ROWTIME AS ts, "
        "PREDICT('car-failure') OVER (PARTITION BY car)->probability AS probability, "
        "PREDICT('car-failure') OVER (PARTITION BY car)->version AS version FROM readings EMIT CHANGES;\n"
    )


def test_kill_9_restores_the_windows_and_scores_each_reading_once(
    bootstrap: str, kafka_config: dict, admin: Admin, topic: Callable[..., str], unique: Callable[[str], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    registry = Registry(str(tmp_path / "registry"))
    history = CarFleet(10, seed=5, failure_rates={"overheating": 0.01}).readings(120)
    params = {"key_column": "car", "time_column": "time", "window": WINDOW, "horizon": 5, "epochs": 1, "hidden": 8}
    train_table("sequence", history.select(["car", "time", *FEATURES, "failure_occurred"]), "failure_occurred",
                params, name="car-failure", registry=registry)  # fmt: skip
    source, sink = topic(partitions=3), unique("predictions")
    readings = CarFleet(10, seed=6).readings(1_500)  # 15,000 readings, time-major: every car's window moves
    n = readings.num_rows
    values = [orjson.dumps(row) for row in readings.select(FEATURES).to_pylist()]
    keys = [car.encode() for car in readings.column("car").to_pylist()]

    def produce(lo: int, hi: int, pause_s: float = 0.0) -> None:
        with Producer(kafka_config) as producer:
            for start in range(lo, hi, 500):
                end = min(start + 500, hi)
                producer.produce_batch(source, values[start:end], keys[start:end])
                producer.flush()
                time.sleep(pause_s)

    produce(0, 2_000)
    streaming = threading.Thread(target=produce, args=(2_000, n, 0.1), daemon=True)
    pipeline = tmp_path / "pipeline.sql"
    pipeline.write_text(predictions_sql(source, sink))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")},
           "STREAMML_BOOTSTRAP": bootstrap, "STREAMML_SERVICE_ID": unique("svc"), "STREAMML_HOME": str(tmp_path)}  # fmt: skip
    first = start_runner(env, pipeline)
    try:
        wait_output(admin, sink, 1_500, first)
        streaming.start()
        wait_output(admin, sink, 4_000, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert streaming.is_alive(), "the worker must die mid-stream for this test to mean anything"
    second = start_runner(env, pipeline)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(read_all(kafka_config, sink)) < n:
            time.sleep(1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))
    assert second.returncode == 0, logs
    committed = read_all(kafka_config, sink)
    assert len(committed) == n, f"every reading scored exactly once in the committed output\n{logs}"

    # the same readings through one executor, without a crash, car by car in order
    engine = SqlEngine()
    ModelProvider(registry).install(engine)
    expected_by_car: dict[str, list[float | None]] = {}
    statements = predictions_sql("src", "out").replace("CREATE STREAM predictions WITH (KAFKA_TOPIC='out') AS ", "")
    engine.execute(statements.split("\n")[0])
    table = engine.plan(statements.split("\n")[1]).executor().execute(readings.select(["car", *FEATURES]))
    for car, p in zip(table.table.column("CAR").to_pylist(), table.table.column("PROBABILITY").to_pylist(),
                      strict=True):  # fmt: skip
        expected_by_car.setdefault(car, []).append(p)
    got_by_car: dict[str, list[float | None]] = {}
    for key, value in committed:
        assert key is not None and value is not None
        got_by_car.setdefault(key.decode(), []).append(orjson.loads(value)["PROBABILITY"])
    assert sorted(got_by_car) == sorted(expected_by_car)
    for car, expected in expected_by_car.items():
        got = got_by_car[car]
        assert [p is None for p in got] == [p is None for p in expected], f"{car}: a window was lost in the crash"
        assert got[: WINDOW - 1] == [None] * (WINDOW - 1) and got[WINDOW - 1] is not None
        np.testing.assert_allclose(
            np.array([p for p in got if p is not None]), np.array([p for p in expected if p is not None]), rtol=1e-5
        )
    assert {orjson.loads(v)["VERSION"] for _, v in committed if v and orjson.loads(v)["VERSION"] is not None} == {1}
