"""The car fleet simulator: reproducible, the demo's fields, failures at their rates announced by their signatures."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from streamml.config import Settings
from streamml.errors import BrokerError, InputError
from streamml.ingest.car_stream import MqttPublisher, fleet_batches
from streamml.ingest.cars import (
    FAILURE_MODES,
    LABEL_COLUMN,
    SENSOR_FIELDS,
    CarFleet,
    kafka_records,
    ksql_spelling,
    mqtt_messages,
    parse_failure_rates,
)
from streamml.kafka import BatchConsumer
from streamml.kafka.mosquitto import LocalMosquitto
from streamml.kafka.process import free_port
from tests.conftest import STREAMML
from tests.sql.conftest import CAR_DDL

CARS, STEPS = 200, 3000


@pytest.fixture(scope="module")
def history() -> pa.Table:
    """A long labelled history: every mode at 0.002 per reading, half the fleet on outdated firmware."""
    return CarFleet(CARS, seed=5, failure_rates=dict.fromkeys(FAILURE_MODES, 0.002), outdated_share=0.5,
                    labels=True).readings(STEPS)  # fmt: skip


def grid(table: pa.Table, name: str) -> np.ndarray:
    """A column as (steps, cars): rows are time-major."""
    col = table.column(name)
    values = np.array(col.to_pylist(), dtype=object) if pa.types.is_string(col.type) else col.to_numpy()
    return values.reshape(-1, CARS)


# ---------------------------------------------------------------------- reproducibility and schema


def test_same_seed_same_readings_however_batched() -> None:
    whole = CarFleet(7, seed=11, labels=True).readings(300)
    fleet = CarFleet(7, seed=11, labels=True)
    pieces = pa.concat_tables([fleet.readings(1), fleet.readings(120), fleet.readings(179)])
    assert whole.equals(pieces)
    assert not CarFleet(7, seed=12, labels=True).readings(300).equals(whole)


def test_fields_types_and_spelling() -> None:
    table = CarFleet(4, seed=1).readings(3)
    assert table.column_names == ["time", "car", *SENSOR_FIELDS] and len(SENSOR_FIELDS) == 19
    assert table.column("car").to_pylist()[:5] == ["car1", "car2", "car3", "car4", "car1"]
    t0 = table.column("time")[0].as_py()
    assert table.column("time").to_pylist() == [t0] * 4 + [t0 + 1] * 4 + [t0 + 2] * 4
    assert str(table.schema.field("tire_pressure_1_1").type) == "int32"
    assert set(table.column("failure_occurred").to_pylist()) <= {"true", "false"}
    assert set(table.column("control_unit_firmware").to_pylist()) <= {1000, 2000}
    # the demo's KSQL stream, as this project's tests declare it, reads the KSQL spelling
    declared = re.findall(r"(\w+) (?:DOUBLE|INT|VARCHAR)", CAR_DDL.split("(", 1)[1])
    assert ksql_spelling(table).column_names[2:] == declared


def test_messages_go_to_each_cars_topic_as_json() -> None:
    table = CarFleet(3, seed=2, labels=True).readings(2)
    messages = mqtt_messages(table)
    assert [t for t, _ in messages] == [f"vehicles/sensor/data/car{i}" for i in (1, 2, 3)] * 2
    first = orjson.loads(messages[0][1])
    assert list(first) == ["time", "car", *SENSOR_FIELDS]  # the label stays out of what a car publishes
    assert first["car"] == "car1" and first["failure_occurred"] in ("true", "false")
    values, keys = kafka_records(table)
    assert keys == [b"car1", b"car2", b"car3"] * 2 and orjson.loads(values[4])["car"] == "car2"


def test_failure_rate_option() -> None:
    assert parse_failure_rates(["0.01"]) == dict.fromkeys(FAILURE_MODES, 0.01)
    rates = parse_failure_rates(["0.01", "overheating=0.2,drive_shaft=0"])
    assert rates["overheating"] == 0.2 and rates["drive_shaft"] == 0 and rates["shock_absorber"] == 0.01
    with pytest.raises(InputError, match="unknown failure mode 'brakes'"):
        parse_failure_rates(["brakes=0.1"])
    with pytest.raises(InputError, match="between 0 and 1"):
        parse_failure_rates(["2"])


def test_count_is_met_in_whole_steps_but_the_last() -> None:
    tables = list(fleet_batches(CarFleet(4, seed=0), 50, None))
    assert sum(t.num_rows for t in tables) == 50


# ---------------------------------------------------------------------- the failure model


def failures(history: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, cars, mode names) of every flagged reading."""
    flagged = grid(history, "failure_occurred") == "true"
    steps, cars = np.nonzero(flagged)
    return steps, cars, grid(history, LABEL_COLUMN)[steps, cars]


def test_each_mode_fails_at_its_rate_and_outdated_firmware_more_often(history: pa.Table) -> None:
    label = grid(history, LABEL_COLUMN)
    healthy = label == None  # noqa: E711 - element-wise over an object array
    outdated = grid(history, "control_unit_firmware") == 1000
    _, cars, modes = failures(history)
    current_healthy = int((healthy & ~outdated).sum())
    old_healthy = int((healthy & outdated).sum())
    old_car = outdated[0]
    for mode in FAILURE_MODES:
        mine = modes == mode
        current_rate = int((mine & ~old_car[cars]).sum()) / current_healthy
        old_rate = int((mine & old_car[cars]).sum()) / old_healthy
        assert 0.0017 < current_rate < 0.0023, (mode, current_rate)
        assert 2.4 < old_rate / current_rate < 3.6, (mode, old_rate / current_rate)
    quiet = CarFleet(20, seed=1, failure_rates={"overheating": 0.0}, labels=True).readings(2000)
    assert "overheating" not in set(quiet.column(LABEL_COLUMN).to_pylist())


def test_failures_develop_over_their_lead_and_the_car_is_repaired(history: pa.Table) -> None:
    label = grid(history, LABEL_COLUMN)
    flagged = grid(history, "failure_occurred") == "true"
    steps, cars, modes = failures(history)
    leads = []
    for t, c, mode in zip(steps, cars, modes, strict=True):
        run = 1  # back to the reading after the previous failure (a repaired car may fail the same way again)
        while t - run >= 0 and label[t - run, c] == mode and not flagged[t - run, c]:
            run += 1
        if t - run >= 0:  # started inside the history
            leads.append(run)
    assert min(leads) >= 10 and max(leads) <= 40 and len(set(leads)) > 20


def window_means(values: np.ndarray, steps: np.ndarray, cars: np.ndarray, before: int = 10) -> np.ndarray:
    """Mean of ``values`` over the ``before`` readings up to and including each failure."""
    keep = steps >= before - 1
    rows = steps[keep, None] - np.arange(before)[None, :]
    return values[rows, cars[keep, None]].mean(axis=-1)


def healthy_baseline(history: pa.Table, values: np.ndarray) -> np.ndarray:
    """Per car (and per wheel) mean over the healthy readings."""
    healthy = grid(history, LABEL_COLUMN) == None  # noqa: E711
    mask = healthy if values.ndim == 2 else healthy[..., None]
    return np.where(mask, values, 0).sum(axis=0) / mask.sum(axis=0)


def expected(history: pa.Table, values: np.ndarray) -> np.ndarray:
    """What a healthy car would read at its speed: a line in speed per car (and wheel), fitted on healthy readings."""
    speed = grid(history, "speed")
    if values.ndim == 3:
        speed = np.repeat(speed[..., None], values.shape[-1], axis=-1)
    mean_v, mean_s = healthy_baseline(history, values), healthy_baseline(history, speed)
    slope = (healthy_baseline(history, values * speed) - mean_v * mean_s) / (
        healthy_baseline(history, speed**2) - mean_s**2
    )
    return mean_v + slope * (speed - mean_s)


@pytest.mark.parametrize("mode", FAILURE_MODES)
def test_signature_precedes_the_flag(history: pa.Table, mode: str) -> None:
    steps, cars, modes = failures(history)
    steps, cars = steps[modes == mode], cars[modes == mode]
    assert len(steps) > 500

    def shift(name: str) -> np.ndarray:
        """How far a field sits above what the car reads when healthy, over the 10 readings before the flag."""
        values = grid(history, name).astype(float)
        return window_means(values - expected(history, values), steps, cars)

    def per_wheel(prefix: str, suffix: str) -> np.ndarray:
        """Per wheel: the 10 readings before the flag against what the car reads there when healthy."""
        wheels = [grid(history, f"{prefix}{w}{suffix}").astype(float) for w in ("1_1", "1_2", "2_1", "2_2")]
        values = np.stack(wheels, -1)
        keep = steps >= 9
        rows = steps[keep, None] - np.arange(10)[None, :]
        window = values[rows, cars[keep, None]].mean(axis=1)  # (failures, wheels)
        return window / expected(history, values)[rows, cars[keep, None]].mean(axis=1)

    if mode == "overheating":
        assert (shift("coolant_temp") > 5.0).all()
        assert abs(np.median(shift("engine_vibration_amplitude"))) < 50
    elif mode == "drive_shaft":
        assert (shift("engine_vibration_amplitude") > 300).all() and (shift("current_draw") > 0.1).all()
        assert abs(np.median(shift("coolant_temp"))) < 1
    elif mode == "tire_pressure_loss":
        ratio = per_wheel("tire_pressure_", "")
        assert (ratio.min(axis=1) < 0.9).all()  # one tyre deflates ...
        assert (np.sort(ratio, axis=1)[:, 1] > 0.96).all()  # ... the others keep their pressure
    else:
        ratio = per_wheel("accelerometer_", "_value")
        assert (ratio.max(axis=1) > 1.5).all()  # one wheel shakes ...
        assert (np.sort(ratio, axis=1)[:, -2] < 1.3).all()  # ... the others do not


def test_repaired_cars_return_to_their_baseline(history: pa.Table) -> None:
    steps, cars, modes = failures(history)
    label = grid(history, LABEL_COLUMN)
    coolant = grid(history, "coolant_temp")
    base = healthy_baseline(history, coolant)
    after = [
        coolant[t + 1 : t + 6, c].mean() - base[c]
        for t, c, m in zip(steps, cars, modes, strict=True)
        if m == "overheating" and t + 6 <= STEPS and all(x is None for x in label[t + 1 : t + 6, c])
    ]
    assert len(after) > 100 and abs(float(np.mean(after))) < 1.0


# ---------------------------------------------------------------------- publishing


@pytest.fixture
def mqtt_port(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto broker on a free port, started by the project's lifecycle class."""
    broker = LocalMosquitto(Settings(home=tmp_path, mqtt_port=0))
    info = broker.start()
    assert info.host_port is not None
    try:
        yield info.host_port[1]
    finally:
        broker.stop()


def test_cli_publishes_each_reading_to_its_cars_mqtt_topic(mqtt_port: int, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    received: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_subscribe = lambda *args: subscribed.set()
    sub.on_message = lambda client, userdata, msg: received.append((msg.topic, msg.payload))
    sub.connect("127.0.0.1", mqtt_port)
    sub.loop_start()
    try:
        sub.subscribe("vehicles/sensor/data/#", qos=1)
        assert subscribed.wait(10)
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")} | {
            "STREAMML_HOME": str(tmp_path / "home")
        }
        proc = subprocess.run(
            [STREAMML, "simulate", "cars", "--cars", "3", "--mqtt", f"127.0.0.1:{mqtt_port}", "--count", "30"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "published 30 readings" in proc.stderr
        deadline = time.monotonic() + 30
        while len(received) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert Counter(t for t, _ in received) == {f"vehicles/sensor/data/car{i}": 10 for i in (1, 2, 3)}
    for topic, payload in received:
        reading: dict[str, Any] = orjson.loads(payload)
        assert topic.endswith("/" + reading["car"]) and list(reading)[2:] == SENSOR_FIELDS


def test_publisher_names_an_unreachable_broker() -> None:
    port = free_port()
    with pytest.raises(BrokerError, match=f"cannot reach the MQTT broker at 127.0.0.1:{port}"):
        MqttPublisher("127.0.0.1", port, timeout_s=2)


@pytest.mark.broker
def test_cli_produces_readings_keyed_by_car(
    cli: Callable[..., subprocess.CompletedProcess[str]], topic: Callable[..., str], kafka_config: dict
) -> None:
    name = topic(partitions=3)
    proc = cli("simulate", "cars", "--cars", "4", "--topic", name, "--count", "50", "--seed", "3")
    assert "produced 50 readings" in proc.stderr
    rows: list[tuple[bytes | None, bytes | None]] = []
    with BatchConsumer(kafka_config, [name]) as consumer:
        deadline = time.monotonic() + 30
        while len(rows) < 50 and time.monotonic() < deadline:
            batch = consumer.poll_batch(1000, 0.5)
            rows.extend(zip(batch.keys, batch.values, strict=True))
    assert len(rows) == 50
    assert Counter(k for k, _ in rows) == {b"car1": 13, b"car2": 13, b"car3": 12, b"car4": 12}
    assert all(orjson.loads(v)["car"].encode() == k for k, v in rows if v is not None)


def test_publishing_more_readings_than_mqtt_has_packet_ids(mqtt_port: int) -> None:
    """A QoS 1 message holds one of 65,535 packet ids until acknowledged: a long history sent at once must
    wait for acknowledgements instead of failing with "Message queue full"."""
    publisher = MqttPublisher("127.0.0.1", mqtt_port, timeout_s=60)
    try:
        publisher.send(CarFleet(35, seed=1).readings(2_000))  # 70,000 readings in one call
    finally:
        publisher.close()
    assert publisher.sent == 70_000
