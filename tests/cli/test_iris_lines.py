"""Iris as the Kafka Streams example had it: plain CSV lines produced with kcat, species on the output topic,
with the classifier trained from a topic through the same SQL."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

import streamml
from streamml.config import Settings
from streamml.formats import get_format
from streamml.kafka import Producer, client_config
from streamml.models.registry import Registry
from streamml.runtime.control import publish_events
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running
from tests.serve.conftest import iris_table

pytestmark = [pytest.mark.broker, pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")]
COLUMNS = "SEPAL_LENGTH DOUBLE, SEPAL_WIDTH DOUBLE, PETAL_LENGTH DOUBLE, PETAL_WIDTH DOUBLE"
FEATURES = "SEPAL_LENGTH, SEPAL_WIDTH, PETAL_LENGTH, PETAL_WIDTH"


def test_csv_lines_from_kcat_come_out_as_species(
    kafka_settings: Settings, bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    settings = kafka_settings.model_copy(update={"service_id": unique("svc"), "registry_url": str(tmp_path / "reg")})
    training, lines, species = unique("iris-train"), unique("iris-lines"), unique("iris-species")
    streamml.sql(
        f"CREATE STREAM iris_train ({COLUMNS}, SPECIES VARCHAR) WITH (KAFKA_TOPIC='{training}', "
        f"VALUE_FORMAT='DELIMITED', PARTITIONS=1);",
        settings=settings,
    )
    table = iris_table()
    rows = pa.table({name.upper(): table.column(name) for name in table.column_names})
    with Producer(client_config(settings)) as producer:
        producer.produce_batch(training, get_format("DELIMITED", rows.schema).encode(rows))
    version = streamml.train("classifier", "iris_train", name="iris", label="SPECIES", settings=settings,
                             params={"model": "logistic"})  # fmt: skip
    assert version.card.lineage.rows == 150
    registry = Registry(settings.registry_root)
    publish_events(settings, [registry.promote("iris", version.version)])
    session = Session(settings)
    session.execute(
        f"CREATE STREAM iris_lines ({COLUMNS}) WITH (KAFKA_TOPIC='{lines}', VALUE_FORMAT='DELIMITED', PARTITIONS=1);"
        f"CREATE STREAM iris_species WITH (KAFKA_TOPIC='{species}', VALUE_FORMAT='DELIMITED') AS "
        f"SELECT PREDICT('iris', {FEATURES})->LABEL AS SPECIES FROM iris_lines;"
    )
    with running(session):
        subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", lines], check=True, timeout=60,
                       input=b"5.4,3.9,1.7,0.4\n7.0,3.2,4.7,1.4\n4.6,3.4,1.4,0.3\n")  # fmt: skip
        out: list[str] = []

        def three() -> bool:
            read = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", species, "-e", "-q", "-X",
                                   "isolation.level=read_committed"], check=True, capture_output=True, timeout=60)  # fmt: skip
            out[:] = read.stdout.decode().split()
            return len(out) >= 3

        assert wait_for(three, 60, 0.5), out
    assert out == ["setosa", "versicolor", "setosa"]
