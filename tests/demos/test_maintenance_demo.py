"""The predictive-maintenance demo, shortened: its command, its notebook, and a reading published with
``mosquitto_pub`` that comes out as a prediction read by ``kcat``, against the test broker and a real Mosquitto."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from streamml.config import Settings
from streamml.demos.maintenance import PREDICTIONS, SENSOR_TOPIC, MaintenanceConfig, MaintenanceDemo
from streamml.ingest.cars import CarFleet, ksql_spelling, published
from streamml.kafka.mosquitto import LocalMosquitto
from tests.demos.notebooks import execute

pytestmark = [pytest.mark.broker, pytest.mark.slow]
pytest.importorskip("torch")

SMALL = ["--cars", "8", "--history-steps", "500", "--live-seconds", "4", "--rate", "200", "--epochs", "3",
         "--failure-rate", "0.004"]  # fmt: skip


def test_demo_command_reports_precision_recall_f1_and_lead_time(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = cli("demo", "maintenance", *SMALL, "-o", str(out), "--stop-broker", env={"STREAMML_MQTT_PORT": "0"},
               timeout=400)  # fmt: skip
    assert "done in" in proc.stdout, proc.stdout + proc.stderr
    report = (out / "report.md").read_text()
    # a model this small may catch none of the few held-out failures: then there is no lead time to state
    number, lead = r"[\d.]+", r"([\d.]+|n/a)"
    assert re.search(
        rf"\| sequence \| car-failure:1 \| {number} \| {number} \| {number} \| {lead} \| (\d+%|n/a) \|", report
    ), report
    scored = re.search(r"readings scored: ([\d,]+) of ([\d,]+) published", report)
    assert scored is not None and scored[1] == scored[2] and scored[1] != "0", report  # every one scored, once
    assert re.search(rf"precision {number}, recall {number}, F1 {number}, lead time median {lead} readings", report), (
        report
    )
    assert (out / "sequence-loss.png").exists() and (out / "autoencoder-score_histogram.png").exists()
    assert not LocalMosquitto(Settings(home=tmp_path / "home")).status().running  # --stop-broker stopped it


@pytest.fixture
def demo(bootstrap: str, tmp_path: Path) -> Iterator[MaintenanceDemo]:
    settings = Settings(bootstrap=bootstrap, home=tmp_path / "home", mqtt_port=0)
    config = MaintenanceConfig(cars=8, history_steps=500, epochs=2, failure_rate=0.004, output_dir=tmp_path / "out")
    demo = MaintenanceDemo(settings, config, say=lambda _line: None)
    try:
        yield demo
    finally:
        demo.close()
        LocalMosquitto(settings).stop()


def kcat(bootstrap: str, topic: str) -> list[tuple[str, bytes]]:
    """(key, value) of every committed record of ``topic``, as kcat reads them."""
    proc = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-X", "isolation.level=read_committed",
         "-f", "%k\t%s\n"], capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return [(k.decode(), v) for k, _, v in (line.partition(b"\t") for line in proc.stdout.splitlines())]


@pytest.mark.skipif(
    not shutil.which("mosquitto_pub") or not shutil.which("kcat"), reason="needs mosquitto-clients, kcat"
)
def test_mosquitto_pub_of_car7_readings_comes_out_as_car7_predictions(demo: MaintenanceDemo, bootstrap: str) -> None:
    demo.start()
    demo.stream_history()
    demo.preprocess()
    demo.train()
    demo.deploy()
    host, port = demo.mqtt
    before = sum(1 for key, _ in kcat(bootstrap, PREDICTIONS) if key == "car7")
    readings = ksql_spelling(published(CarFleet(1, seed=99).readings(3))).drop_columns(["time", "car"])
    for row in readings.to_pylist():
        subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-t", "vehicles/sensor/data/car7",
                        "-m", orjson.dumps(row).decode()], check=True, timeout=30)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        predictions = [orjson.loads(v) for key, v in kcat(bootstrap, PREDICTIONS) if key == "car7"]
        if len(predictions) >= before + 3:
            break
        time.sleep(0.5)
    landed = [orjson.loads(v) for key, v in kcat(bootstrap, SENSOR_TOPIC) if key == "car7"]
    assert landed[-3:] == readings.to_pylist()  # keyed car7 by the bridge, payloads as published
    assert len(predictions) == before + 3
    for prediction in predictions[-3:]:  # car7 has a full window: every new reading is scored
        assert 0.0 <= prediction["FAILURE_PROBABILITY"] <= 1.0
        assert prediction["MODEL_VERSION"] == demo.versions["sequence"].version
        assert isinstance(prediction["FAILURE_PREDICTED"], bool)


def test_notebook_tells_the_same_story(bootstrap: str, tmp_path: Path, repo_root: Path) -> None:
    env = {"STREAMML_BOOTSTRAP": bootstrap, "STREAMML_HOME": str(tmp_path / "home"), "STREAMML_MQTT_PORT": "0",
           "DEMO_CARS": "8", "DEMO_HISTORY_STEPS": "500", "DEMO_FAILURE_RATE": "0.004", "DEMO_LIVE_SECONDS": "3", "DEMO_LIVE_RATE": "200",
           "DEMO_EPOCHS": "2", "DEMO_OUTPUT": str(tmp_path / "out")}  # fmt: skip
    try:
        outputs = execute(repo_root / "notebooks" / "predictive_maintenance.ipynb", env, tmp_path)
    finally:
        LocalMosquitto(Settings(home=tmp_path / "home")).stop()
    assert re.search(r"scored ([1-9][\d,]*) of \1 live readings", outputs), outputs  # each published one, once
    assert "lead time" in (tmp_path / "out" / "report.md").read_text()
