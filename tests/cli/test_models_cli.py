"""``streamml train`` and ``streamml models`` through the installed command, against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamml.formats import get_format
from streamml.kafka import BatchConsumer, Producer
from streamml.models.events import ModelEvent
from streamml.runtime.naming import MODELS_TOPIC

pytestmark = pytest.mark.broker

Run = Callable[..., subprocess.CompletedProcess[str]]

# Registers the commands the way the application does, for a checkout whose app does not list them yet.
_WRAPPER = (
    "import sys; from streamml.cli.app import app, main; from streamml.cli import models_cmd, train_cmd; "
    "app.add_typer(models_cmd.app, name='models'); app.command('train')(train_cmd.train); main()"
)


@pytest.fixture
def sm(cli: Run, bootstrap: str, tmp_path: Path) -> Run:
    """The ``cli`` fixture, or the same console entry point with these commands registered."""
    if cli("models", "--help", check=False).returncode == 0:
        return cli

    def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
        env.update({"STREAMML_BOOTSTRAP": bootstrap, "STREAMML_HOME": str(tmp_path / "home"), "COLUMNS": "200"})
        proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"streamml {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    return run


def produce_iris(config: dict, topic: str) -> None:
    from sklearn.datasets import load_iris

    data = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    table = pa.table(
        {**{n: data.data[:, i] for i, n in enumerate(names)}, "species": np.asarray(data.target_names)[data.target]}
    )
    with Producer(config) as producer:
        producer.produce_batch(topic, get_format("JSON", table.schema).encode(table))


def control_events(config: dict, model: str, count: int, timeout_s: float = 30.0) -> list[ModelEvent]:
    """Events of ``model`` on the control topic, in order (waits until ``count`` arrived)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events: list[ModelEvent] = []
        with BatchConsumer(config, [MODELS_TOPIC], track_end=True) as reader:
            while not reader.reached_end() and time.monotonic() < deadline:
                batch = reader.poll_batch(1000, 0.2)
                events += [
                    ModelEvent.from_json(v)
                    for k, v in zip(batch.keys, batch.values, strict=True)
                    if v is not None and k is not None and k.decode().split("@")[0].split(":")[0] == model
                ]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_train_show_promote_rollback(
    sm: Run, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str], tmp_path: Path
) -> None:
    source, model = topic(partitions=2), unique("iris")
    produce_iris(kafka_config, source)
    trained = sm("train", "classifier", "--from", source, "--label", "species", "--name", model, "--promote",
                 "--param", "model=logistic", "--seed", "1", "--threads", "1")  # fmt: skip
    assert "read 150 records -> 150 rows from Kafka" in trained.stdout
    assert "accuracy" in trained.stdout and f"registered {model}:1" in trained.stdout
    assert "plot:" in trained.stdout and f"promoted {model}:1 to production" in trained.stdout

    listed = sm("models", "list")
    assert model in listed.stdout and "production=1" in listed.stdout
    shown = sm("models", "show", f"{model}:1")
    assert "partition 0: offsets [0, " in shown.stdout and f'sql: SELECT * FROM "{source}"' in shown.stdout
    assert "value schema:" in shown.stdout and "/plots/" in shown.stdout and "accuracy" in shown.stdout

    again = sm("train", "classifier", "--from", source, "--label", "species", "--name", model, "--threads", "1")
    assert "from snapshot cache" in again.stdout and f"registered {model}:2" in again.stdout
    sm("models", "promote", model, "2")
    rolled = sm("models", "rollback", model)
    assert f"{model}@production -> 1 (was 2)" in rolled.stdout

    events = control_events(kafka_config, model, 3)
    assert [(e.action, e.version, e.previous_version) for e in events] == [
        ("promote", 1, None), ("promote", 2, 1), ("rollback", 1, 2)
    ]  # fmt: skip

    out_dir = tmp_path / "exported"
    sm("models", "export", f"{model}:2", str(out_dir))
    assert (out_dir / "model.onnx").is_file() and (out_dir / "card.json").is_file()
    refused = sm("models", "delete", f"{model}:1", check=False)
    assert refused.returncode == 7 and "aliased as production" in refused.stderr
    sm("models", "delete", f"{model}:1", "--force")
    deleted = control_events(kafka_config, model, 5)
    assert [(e.action, e.key) for e in deleted[3:]] == [
        ("remove_alias", f"{model}@production"),
        ("delete", f"{model}:1"),
    ]


def test_corrupt_artifact_is_refused_cleanly(sm: Run, tmp_path: Path, unique: Callable[[str], str]) -> None:
    model = unique("broken")
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07this is not an onnx graph")
    result = sm("models", "register", model, str(bad), check=False)
    assert result.returncode == 7
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to register") and "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "registry" / model).exists()
    assert model not in sm("models", "list").stdout


def test_bad_arguments_are_one_line_errors(sm: Run, topic: Callable[..., str]) -> None:
    result = sm(
        "train", "classifier", "--from", "no-such-stream-or-topic", "--name", "m", "--param", "oops", check=False
    )
    assert result.returncode == 2 and "invalid parameter 'oops'" in result.stderr
    nowhere = sm("train", "classifier", "--from", "no-such-stream-or-topic", "--name", "m", check=False)
    assert nowhere.returncode == 2 and "neither a stream of the catalog nor a topic" in nowhere.stderr
    source = topic()
    missing = sm("train", "classifier", "--from", source, "--name", "m", "--to-offset", "0", check=False)
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    unknown = sm("models", "show", "nothing-here", check=False)
    assert unknown.returncode == 7 and "is not registered" in unknown.stderr


def test_params_parse_as_json_or_text() -> None:
    from streamml.cli.train_cmd import parse_params

    parsed = parse_params(["epochs=20", "hidden=[16,8,16]", "features=V1,V2", "model=logistic", "alpha=0.5"])
    assert parsed == {"epochs": 20, "hidden": [16, 8, 16], "features": ["V1", "V2"], "model": "logistic", "alpha": 0.5}


def test_a_model_as_a_named_sql_function(sm: Run, kafka_config: dict, topic: Callable[..., str],
                                         unique: Callable[[str], str]) -> None:  # fmt: skip
    source, model = topic(), unique("iris")
    produce_iris(kafka_config, source)
    sm("train", "classifier", "--from", source, "--label", "species", "--name", model, "--promote",
       "--param", "model=logistic", "--seed", "1", "--threads", "1")  # fmt: skip
    defined = sm("models", "function", "species_of", model, "--field", "label")
    assert f"SPECIES_OF(...) = PREDICT('{model}')->label" in defined.stdout
    sm("sql", "-e", f"CREATE STREAM irises (sepal_length DOUBLE, sepal_width DOUBLE, petal_length DOUBLE, "
                    f"petal_width DOUBLE, species VARCHAR) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")  # fmt: skip
    rows = sm("sql", "-e", "SELECT species, SPECIES_OF() AS guess FROM irises WHERE SPECIES_OF() = 'setosa';")
    lines = [
        line for line in rows.stdout.splitlines() if "setosa" in line or "versicolor" in line or "virginica" in line
    ]
    assert len(lines) == 50 and all(line.count("setosa") == 2 for line in lines)  # the model knows setosa
    described = sm("sql", "-e", "DESCRIBE FUNCTION species_of;")
    assert f"PREDICT('{model}')->label" in described.stdout
    refused = sm("models", "function", "other", unique("missing"), check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
