"""Training from the history of a stream or topic: the model card records exactly what was read, and how."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import OFFSET_END, TopicPartition
from confluent_kafka.admin import AdminClient

from streamml.config import Settings
from streamml.errors import InputError, ModelError
from streamml.ingest.simulate import transactions
from streamml.kafka.admin import Admin
from streamml.models.registry import Registry
from streamml.runtime.history import History
from streamml.runtime.training import train_from_stream
from streamml.sql import SqlEngine
from tests.runtime.test_history import V_NAMES, fraud_engine, produce_partitioned

pytestmark = pytest.mark.broker

FRAUD_SQL = f"SELECT {V_NAMES}, Amount, Class FROM tx WHERE Class IS NOT NULL"


def iris_table() -> pa.Table:
    from sklearn.datasets import load_iris

    data = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    columns: dict[str, object] = {name: data.data[:, i] for i, name in enumerate(names)}
    columns["species"] = np.asarray(data.target_names)[data.target].tolist()
    return pa.table(columns)


def test_autoencoder_and_gbdt_from_a_stream(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path
) -> None:
    name = topic(partitions=3)
    produced = produce_partitioned(kafka_config, name, transactions(12_000, fraud_rate=0.02, seed=11), 3)
    settings = Settings(bootstrap=kafka_settings.bootstrap, home=tmp_path)
    engine = fraud_engine(name)
    reads: list[History] = []

    version = train_from_stream(
        settings, "autoencoder", "tx", label="class", name="fraud", sql=FRAUD_SQL, engine=engine, seed=3, threads=1,
        params={"epochs": 40, "hidden": [16, 8, 16]}, on_history=reads.append,
    )  # fmt: skip
    card = version.card
    assert (version.version, card.recipe, card.label) == (1, "autoencoder", "CLASS")
    assert card.metrics["roc_auc"] >= 0.9
    assert card.parity is not None and card.parity.max_abs_diff <= 1e-4
    assert card.lineage.source == "TX" and card.lineage.sql == FRAUD_SQL
    assert {(r.partition, r.start, r.end) for r in card.lineage.partitions} == {(p, 0, n) for p, n in produced.items()}
    assert card.lineage.rows == reads[0].table.num_rows and not reads[0].cached
    assert Registry(tmp_path / "registry").get("fraud").card.lineage == card.lineage

    gbdt = train_from_stream(
        settings, "gbdt", "tx", label="CLASS", name="fraud-gbdt", sql=FRAUD_SQL, engine=engine, seed=3, threads=1,
        params={"max_iter": 30}, on_history=reads.append,
    )  # fmt: skip
    assert reads[1].cached  # the same range and SQL: read from the snapshot, not Kafka
    assert gbdt.card.metrics["roc_auc"] >= 0.9 and gbdt.card.lineage == card.lineage
    assert gbdt.card.parity is not None and gbdt.card.parity.max_abs_diff <= 1e-4


def test_iris_classifier_from_a_raw_topic(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path
) -> None:
    name = topic(partitions=2)
    produced = produce_partitioned(kafka_config, name, iris_table(), 2)
    settings = Settings(bootstrap=kafka_settings.bootstrap, home=tmp_path)
    version = train_from_stream(settings, "classifier", name, label="species", name="iris",
                                engine=SqlEngine.with_plugins(), seed=0, threads=1)  # fmt: skip
    card = version.card
    assert card.metrics["accuracy"] >= 0.9
    assert card.features == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert {(r.partition, r.start, r.end) for r in card.lineage.partitions} == {(p, 0, n) for p, n in produced.items()}
    raw = np.array([[5.4, 3.9, 1.7, 0.4], [7.0, 3.2, 4.7, 1.4], [4.6, 3.4, 1.4, 0.3]])
    assert list(version.load().predict(raw)["label"]) == ["setosa", "versicolor", "setosa"]


def test_empty_result_and_unknown_label_are_model_errors(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path
) -> None:
    name = topic(partitions=1)
    produce_partitioned(kafka_config, name, iris_table().slice(0, 30), 1)
    settings = Settings(bootstrap=kafka_settings.bootstrap, home=tmp_path)
    engine = SqlEngine.with_plugins()
    with pytest.raises(ModelError, match="kept none of the 30 records"):
        train_from_stream(settings, "classifier", name, label="species", name="iris", engine=engine,
                          sql=f"SELECT * FROM \"{name}\" WHERE species = 'nothing'")  # fmt: skip
    with pytest.raises(ModelError, match="label column 'kind'"):
        train_from_stream(settings, "classifier", name, label="kind", name="iris", engine=engine)
    assert not (tmp_path / "registry" / "iris").exists()


def test_history_the_broker_deleted_is_named_as_such(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path
) -> None:
    """Records deleted under a reader (retention, delete-records) are reported as deleted, not as an empty range."""
    name = topic(partitions=2)
    produce_partitioned(kafka_config, name, iris_table().slice(0, 40), 2)
    client = AdminClient({"bootstrap.servers": kafka_settings.bootstrap})
    gone = [TopicPartition(name, p, OFFSET_END) for p in range(2)]
    for future in client.delete_records(gone).values():
        future.result(timeout=10)
    settings = Settings(bootstrap=kafka_settings.bootstrap, home=tmp_path)
    with pytest.raises(InputError) as raised:  # a raw topic: nothing to infer its columns from
        train_from_stream(settings, "classifier", name, label="species", name="iris", engine=SqlEngine.with_plugins())
    message = str(raised.value)
    assert "the broker deleted them (partition 0 below offset 20, partition 1 below offset 20)" in message
    assert "retention.ms" in message
    with pytest.raises(InputError, match=r"requested range of .* holds no records"):
        train_from_stream(settings, "classifier", name, label="species", name="iris", engine=SqlEngine.with_plugins(),
                          from_offset=100)  # fmt: skip
    engine = fraud_engine(name)  # a stream of the catalog: the history is read, and is empty
    with pytest.raises(ModelError, match=r"the broker deleted them \(partition 0 below offset 20"):
        train_from_stream(settings, "autoencoder", "tx", label=None, name="fraud", engine=engine)


def test_the_local_broker_keeps_replayed_history(admin: Admin, topic: Callable[..., str]) -> None:
    """Replayed datasets carry old timestamps: a time-based retention would delete them minutes after they
    are produced (the broker checks every 5 minutes), under a training read."""
    if os.environ.get("STREAMML_TEST_BOOTSTRAP"):
        pytest.skip("checks the broker the project starts")
    assert admin.topic_config(topic(), include_defaults=True)["retention.ms"] == "-1"
