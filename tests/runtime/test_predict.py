"""PREDICT inside persistent queries: scoring, provenance, hot swap, refused versions, poison records."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pytest

from streamml.config import Settings
from streamml.formats import get_format
from streamml.ingest.simulate import transactions
from streamml.kafka import Admin, BatchConsumer, Producer
from streamml.models.registry import Registry
from streamml.models.training import train_table
from streamml.runtime.deadletter import header_dict
from streamml.runtime.metrics import STAGES
from streamml.runtime.naming import MODELS_TOPIC, dead_letter_topic
from streamml.runtime.observe import RunnerCollector
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import running

pytestmark = pytest.mark.broker

FEATURES = ["Time"] + [f"V{i}" for i in range(1, 29)] + ["Amount"]
COLUMNS = "Id BIGINT, " + ", ".join(f"{f} DOUBLE" for f in FEATURES) + ", Class VARCHAR"
ARGS = ", ".join(FEATURES)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry with fraud:1 and fraud:2 (autoencoders) and fraud:3 (a model with other inputs)."""
    reg = Registry(str(tmp_path_factory.mktemp("registry")))
    data = (
        transactions(4000, fraud_rate=0.03, seed=3)
        .select([*FEATURES, "Class"])
        .filter(pa.compute.is_valid(pa.compute.field("Class")))
    )
    data = data.set_column(0, "Time", data.column("Time").cast(pa.float64()))
    params = {"hidden": [14, 7, 14], "epochs": 30}
    train_table("autoencoder", data, "Class", params, name="fraud", registry=reg, seed=1)
    train_table("autoencoder", data, "Class", params, name="fraud", registry=reg, seed=2)
    train_table(
        "autoencoder", data.select(["V1", "V2", "V3", "Class"]), "Class", params, name="fraud", registry=reg, seed=3
    )
    reg.promote("fraud", 1)
    return reg


@pytest.fixture
def scoring(kafka_settings: Settings, registry: Registry, unique: Callable[[str], str]) -> Iterator[Session]:
    settings = kafka_settings.model_copy(update={"service_id": unique("svc"), "registry_url": registry.root_url})
    yield Session(settings)


def tx_values(n: int, seed: int, first_id: int = 0) -> list[bytes]:
    table = transactions(n, fraud_rate=0.01, seed=seed, first_id=first_id).select(["Id", *FEATURES, "Class"])
    return get_format("JSON", table.schema).encode(table)


def publish(config: dict, event: object) -> None:
    with Producer(config) as producer:
        producer.produce_batch(MODELS_TOPIC, [event.to_json().encode()], [event.key.encode()])  # type: ignore[attr-defined]


def read(config: dict, topic: str) -> list[tuple[int, bytes | None, bytes | None, dict[str, str]]]:
    rows = []
    with BatchConsumer(config, [topic], track_end=True) as reader:
        while not reader.reached_end():
            batch = reader.poll_batch(20_000, 0.5)
            rows += [
                (int(p), k, v, header_dict(h))
                for p, k, v, h in zip(batch.partitions, batch.keys, batch.values, batch.headers, strict=True)
            ]
    return rows


def setup_pipeline(session: Session, source: str, sink: str) -> str:
    session.execute(f"CREATE STREAM tx ({COLUMNS}) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")
    query_id = session.execute(
        f"CREATE STREAM scored WITH (KAFKA_TOPIC='{sink}') AS SELECT Id, PREDICT('fraud', {ARGS}) AS p FROM tx;"
    )[0].result.query_id
    assert query_id is not None
    return query_id


def test_predict_scores_every_record_with_provenance(
    scoring: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    source, sink = topic(partitions=2), unique("scored")
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, tx_values(3000, seed=5), [str(i).encode() for i in range(3000)])
    setup_pipeline(scoring, source, sink)
    scoring.execute("CREATE STREAM alerts AS SELECT * FROM scored WHERE p->is_anomaly;")
    plain = unique("plain")  # no PREDICT: its records name no model, though its runner serves one
    scoring.execute(f"CREATE STREAM plain WITH (KAFKA_TOPIC='{plain}') AS SELECT Id FROM tx;")
    with running(scoring) as runner:
        assert wait_for(lambda: len(read(kafka_config, sink)) >= 3000, 90)
        assert wait_for(lambda: len(read(kafka_config, plain)) >= 3000, 90)
        out = read(kafka_config, sink)
        assert all("streamml.model.version" not in h for _, _, _, h in read(kafka_config, plain))
        assert next(m for m in runner.status() if "PLAIN" in m.query_id).model_versions == {}
        scorer = next(m for m in runner.status() if m.records_out >= 3000)
    # every stage of the loop was timed, per batch, and is in the status snapshot and the Prometheus export
    stages = scorer.snapshot()["stages"]
    assert set(STAGES) <= set(stages), stages
    assert all(stages[s]["count"] > 0 and stages[s]["p99_ms"] is not None for s in STAGES), stages
    assert stages["predict"]["count"] <= scorer.batches
    exported = {
        sample.labels["stage"]
        for family in RunnerCollector(lambda: [scorer]).collect()
        if family.name == "streamml_stage_seconds"
        for sample in family.samples
        if sample.name.endswith("_count") and sample.value > 0
    }
    assert exported == set(stages)
    values = [orjson.loads(v) for _, _, v, _ in out if v]
    assert sorted(v["ID"] for v in values) == list(range(3000))
    assert all(v["P"]["MODEL"] == "fraud" and v["P"]["VERSION"] == 1 for v in values), values[0]
    assert all(isinstance(v["P"]["SCORE"], float) for v in values)
    assert {h["streamml.model.version"] for _, _, _, h in out} == {"fraud:fraud:1"}
    assert [k for _, k, _, _ in out if k is not None] and all(
        k == str(orjson.loads(v)["ID"]).encode() for _, k, v, _ in out
    )


def test_promotion_swaps_at_batch_boundaries_without_loss(
    scoring: Session, kafka_config: dict, registry: Registry, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    source, sink = topic(partitions=3), unique("scored")
    setup_pipeline(scoring, source, sink)
    n = 20_000
    with running(scoring):
        producer = Producer(kafka_config)
        for chunk in range(20):
            producer.produce_batch(source, tx_values(n // 20, seed=chunk, first_id=chunk * (n // 20)))
            producer.flush()
            if chunk == 8:
                publish(kafka_config, registry.promote("fraud", 2))
            time.sleep(0.1)
        assert wait_for(lambda: len(read(kafka_config, sink)) >= n, 120)
        out = read(kafka_config, sink)
    publish(kafka_config, registry.promote("fraud", 1))
    ids = [orjson.loads(v)["ID"] for _, _, v, _ in out if v]
    assert sorted(ids) == list(range(n)), "no loss, no duplicate"
    versions_by_partition: dict[int, list[int]] = {}
    for partition, _, value, headers in out:
        version = orjson.loads(value)["P"]["VERSION"]  # type: ignore[arg-type]
        assert headers["streamml.model.version"].endswith(f":{version}")
        versions_by_partition.setdefault(partition, []).append(version)
    seen = set()
    for versions in versions_by_partition.values():
        switches = np.count_nonzero(np.diff(versions))
        assert switches <= 1 and versions == sorted(versions), "each version scored one contiguous run"
        seen.update(versions)
    assert seen == {1, 2}


def test_broken_version_is_refused_and_old_keeps_serving(
    scoring: Session, kafka_config: dict, registry: Registry, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    source, sink = topic(), unique("scored")
    setup_pipeline(scoring, source, sink)
    with running(scoring) as runner:
        with Producer(kafka_config) as producer:
            producer.produce_batch(source, tx_values(500, seed=1))
        assert wait_for(lambda: len(read(kafka_config, sink)) >= 500, 60)
        publish(kafka_config, registry.promote("fraud", 3))  # reads 3 features, the query passes 30
        assert wait_for(lambda: bool(runner.refusals), 30)
        with Producer(kafka_config) as producer:
            producer.produce_batch(source, tx_values(500, seed=2, first_id=500))
        assert wait_for(lambda: len(read(kafka_config, sink)) >= 1000, 60)
    publish(kafka_config, registry.promote("fraud", 1))
    assert "refused fraud:3" in runner.refusals[0] and "do not match" in runner.refusals[0]
    versions = {orjson.loads(v)["P"]["VERSION"] for _, _, v, _ in read(kafka_config, sink) if v}
    assert versions == {1}


def test_poison_records_are_dead_lettered_and_the_rest_scored(
    scoring: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str], admin: Admin
) -> None:
    source, sink = topic(), unique("scored")
    query_id = setup_pipeline(scoring, source, sink)
    good = tx_values(10, seed=4)
    row = orjson.loads(good[0])
    wrong_type = orjson.dumps({**row, "V3": "not a number"})
    missing = orjson.dumps({k: v for k, v in row.items() if k != "V7"})
    poison = [b'{"Id": 1, "V1": ', wrong_type, missing]
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, good[:5] + poison + good[5:])
    with running(scoring):
        dlq = dead_letter_topic(scoring.settings.service_id, query_id)
        assert wait_for(
            lambda: len(read(kafka_config, sink)) >= 10 and admin.exists(dlq) and len(read(kafka_config, dlq)) >= 3, 60
        )
    assert len(read(kafka_config, sink)) == 10
    letters = read(kafka_config, dlq)
    assert [v for _, _, v, _ in letters] == poison
    kinds = [h["streamml.error.kind"] for _, _, _, h in letters]
    assert kinds == ["decode", "decode", "predict"]
    assert (
        "PREDICT('fraud'): feature 8" in letters[2][3]["streamml.error.message"]
        and "NULL or NaN" in letters[2][3]["streamml.error.message"]
    )
    assert all(
        h["streamml.source.topic"] == source and h["streamml.model.version"] == "fraud:fraud:1"
        for _, _, _, h in letters
    )
    assert [h["streamml.source.offset"] for _, _, _, h in letters] == ["5", "6", "7"]


def test_predict_without_columns_reads_the_signature_features(
    scoring: Session, kafka_config: dict, topic: Callable[..., str]
) -> None:
    source = topic()
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, tx_values(200, seed=9))
    scoring.execute(f"CREATE STREAM tx ({COLUMNS}) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")
    implicit = scoring.query("SELECT Id, PREDICT('fraud') AS p FROM tx;")
    explicit = scoring.query(f"SELECT Id, PREDICT('fraud', {ARGS}) AS p FROM tx;")
    assert implicit.num_rows == explicit.num_rows == 200
    assert implicit.column("P").to_pylist() == explicit.column("P").to_pylist()
    with pytest.raises(Exception, match=r"is not registered"):
        scoring.query("SELECT Id, PREDICT('nosuchmodel') AS p FROM tx;")
