"""Reading the history of a stream or topic through the production SQL plan, with lineage and a snapshot cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamml.config import Settings
from streamml.errors import InputError, KafkaError, SqlError
from streamml.formats import get_format
from streamml.ingest.simulate import transactions
from streamml.kafka import BatchConsumer, Producer, RecordBatch
from streamml.runtime import history as history_module
from streamml.runtime.history import Bounds, parse_time, read_history
from streamml.sql import SqlEngine

pytestmark = pytest.mark.broker

V_COLUMNS = ", ".join(f"V{i} DOUBLE" for i in range(1, 29))
V_NAMES = ", ".join(f"V{i}" for i in range(1, 29))


def produce_partitioned(
    config: dict, topic: str, table: pa.Table, partitions: int, fmt: str = "JSON", start_ms: int | None = None
) -> dict[int, int]:
    """Produce ``table`` round-robin over ``partitions``, record ``i`` at ``start_ms + i`` seconds.

    Returns how many records each partition got. (Timestamps take the per-record send path, which honours
    explicit partitions.)
    """
    values = get_format(fmt, table.schema).encode(table)
    assigned = np.arange(table.num_rows) % partitions
    start_ms = parse_time("2026-01-01T00:00:00Z") if start_ms is None else start_ms
    timestamps = [start_ms + 1000 * i for i in range(table.num_rows)]
    with Producer(config) as producer:
        producer.produce_batch(topic, values, partitions=assigned.tolist(), timestamps=timestamps)
    return {p: int((assigned == p).sum()) for p in range(partitions)}


def fraud_engine(topic: str, fmt: str = "JSON", name: str = "tx") -> SqlEngine:
    """An engine whose catalog holds a stream ``name`` over the transactions layout on ``topic``."""
    engine = SqlEngine.with_plugins()
    engine.execute(
        f"CREATE STREAM {name} (Id BIGINT, Timestamp VARCHAR, User VARCHAR, Time INT, {V_COLUMNS}, "
        f"Amount DOUBLE, Class VARCHAR) WITH (KAFKA_TOPIC='{topic}', VALUE_FORMAT='{fmt}');"
    )
    return engine


def settings_at(kafka_settings: Settings, home: Path) -> Settings:
    return Settings(bootstrap=kafka_settings.bootstrap, home=home)


def test_stream_history_runs_the_sql_and_records_lineage(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path
) -> None:
    name = topic(partitions=3)
    data = transactions(3000, fraud_rate=0.05, seed=3)
    produced = produce_partitioned(kafka_config, name, data, 3, fmt="DELIMITED")
    settings = settings_at(kafka_settings, tmp_path)
    sql = f"SELECT Id, {V_NAMES}, Amount * 2 AS DOUBLE_AMOUNT, Class FROM tx WHERE Class IS NOT NULL"
    history = read_history(settings, "tx", sql=sql, engine=fraud_engine(name, "DELIMITED"))

    labelled = data.filter(data.column("Class").is_valid())
    assert history.records == 3000 and history.decode_failures == 0 and not history.cached
    assert history.table.num_rows == labelled.num_rows
    assert history.table.column_names[:2] == ["ID", "V1"] and history.table.column_names[-1] == "CLASS"
    ids = history.table.column("ID").to_pylist()
    assert ids == sorted(ids)  # record i was produced at start + i seconds: time order is id order
    got = history.table.sort_by("ID")
    expected = labelled.sort_by("Id")
    np.testing.assert_allclose(got.column("DOUBLE_AMOUNT").to_numpy(), expected.column("Amount").to_numpy() * 2)
    assert got.column("CLASS").to_pylist() == expected.column("Class").to_pylist()

    lineage = history.lineage
    assert lineage.source == "TX" and lineage.sql == sql and lineage.rows == labelled.num_rows
    assert {(r.partition, r.start, r.end) for r in lineage.partitions} == {(p, 0, n) for p, n in produced.items()}
    assert isinstance(lineage.value_schema, str) and '"V28" DOUBLE' in lineage.value_schema
    assert lineage.time_start is not None and lineage.time_end is not None


def test_an_end_of_partition_event_below_the_planned_end_is_not_the_end(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The consumer may signal end-of-partition before it sees records the plan counted (its fetch caught up
    with an older view of the partition, as happens on a busy machine); the read must go on to the planned
    end instead of returning an empty history."""
    name = topic(partitions=3)
    produced = produce_partitioned(kafka_config, name, transactions(300, seed=2), 3)
    poll_batch = BatchConsumer.poll_batch
    early: set[int] = set()

    def early_end(self: BatchConsumer, max_records: int = 10_000, timeout_s: float = 0.5) -> RecordBatch:
        if id(self) not in early:  # the first poll, before any record is read
            early.add(id(self))
            for tp in self.raw.assignment():
                self.at_end.add((tp.topic, tp.partition))
                getattr(self, "end_offsets", {})[(tp.topic, tp.partition)] = 0
            return RecordBatch([])
        return poll_batch(self, max_records, timeout_s)

    monkeypatch.setattr(BatchConsumer, "poll_batch", early_end)
    history = read_history(settings_at(kafka_settings, tmp_path), "tx", sql="SELECT Id FROM tx",
                           engine=fraud_engine(name), cache=False)  # fmt: skip
    assert early and history.records == 300
    assert sorted(history.table.column("ID").to_pylist()) == list(range(300))
    assert {(r.partition, r.start, r.end) for r in history.lineage.partitions} == {
        (p, 0, n) for p, n in produced.items()
    }


def test_a_read_that_cannot_reach_its_planned_end_raises(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Planned end offsets the partitions never reach (records gone, or not visible within the timeout) are
    an error naming topic, partition, expected and reached offsets, never a silently short history."""
    name = topic(partitions=2)
    produce_partitioned(kafka_config, name, transactions(30, seed=4), 2)
    plan = history_module._plan_ranges

    def beyond_the_end(*args: object) -> dict[int, tuple[int, int]]:
        ranges = plan(*args)  # type: ignore[arg-type]
        return {p: (start, end + 5) if p == 1 else (start, end) for p, (start, end) in ranges.items()}

    monkeypatch.setattr(history_module, "_plan_ranges", beyond_the_end)
    monkeypatch.setattr(history_module, "IDLE_TIMEOUT_S", 1.0, raising=False)
    with pytest.raises(KafkaError) as raised:
        read_history(settings_at(kafka_settings, tmp_path), "tx", sql="SELECT Id FROM tx", engine=fraud_engine(name))
    message = str(raised.value)
    assert f"'{name}'" in message and "partition 1: expected offsets up to 20, reached 15" in message
    assert "partition 0" not in message
    assert not list((tmp_path / "snapshots").glob("*.parquet"))  # nothing short was cached


def test_second_read_hits_the_snapshot_cache(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    name = topic(partitions=2)
    produce_partitioned(kafka_config, name, transactions(2000, seed=5), 2)
    settings = settings_at(kafka_settings, tmp_path)
    engine = fraud_engine(name)
    first = read_history(settings, "tx", sql=f"SELECT {V_NAMES}, Class FROM tx", engine=engine)
    assert first.cache_path is not None and first.cache_path.parent == tmp_path / "snapshots"

    def no_kafka(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached read consumed from Kafka")

    monkeypatch.setattr(history_module, "_read", no_kafka)
    second = read_history(settings, "tx", sql=f"SELECT {V_NAMES}, Class FROM tx", engine=engine)
    assert second.cached and second.table.equals(first.table)
    assert second.lineage == first.lineage and second.records == first.records
    monkeypatch.undo()
    other = read_history(settings, "tx", sql=f"SELECT {V_NAMES}, Class FROM tx", engine=engine, cache=False)
    assert other.table.equals(first.table)  # cache=False reads Kafka, never the snapshot


def test_offset_and_time_bounds(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path
) -> None:
    name = topic(partitions=2)
    start_ms = parse_time("2026-03-01T00:00:00Z")
    produce_partitioned(kafka_config, name, transactions(400, seed=1), 2, start_ms=start_ms)
    settings = settings_at(kafka_settings, tmp_path)
    engine = fraud_engine(name)

    by_offset = read_history(settings, "tx", sql="SELECT Id FROM tx", engine=engine,
                             bounds=Bounds(from_offset=10, to_offset=50), cache=False)  # fmt: skip
    assert by_offset.table.num_rows == 80
    assert {(r.partition, r.start, r.end) for r in by_offset.lineage.partitions} == {(0, 10, 50), (1, 10, 50)}
    # record i was produced at start + i seconds to partition i % 2: ids 100..199 are 100 s..200 s
    by_time = read_history(settings, "tx", sql="SELECT Id FROM tx", engine=engine, cache=False,
                           bounds=Bounds(from_time_ms=start_ms + 100_000, to_time_ms=start_ms + 200_000))  # fmt: skip
    assert sorted(by_time.table.column("ID").to_pylist()) == list(range(100, 200))
    assert (
        by_time.lineage.time_start is not None and by_time.lineage.time_start.timestamp() * 1000 == start_ms + 100_000
    )


def test_raw_json_topic_infers_its_schema(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path
) -> None:
    name = topic(partitions=1)
    table = pa.table({"sepal_length": [5.1, 7.0, 6.3] * 10, "species": ["setosa", "versicolor", "virginica"] * 10})
    produce_partitioned(kafka_config, name, table, 1)
    settings = settings_at(kafka_settings, tmp_path)
    engine = SqlEngine.with_plugins()
    everything = read_history(settings, name, engine=engine)
    assert everything.table.column_names == ["sepal_length", "species"] and everything.table.num_rows == 30
    assert everything.lineage.sql == f'SELECT * FROM "{name}"'
    filtered = read_history(settings, name, engine=engine,
                            sql=f"SELECT sepal_length FROM \"{name}\" WHERE species = 'setosa'")  # fmt: skip
    assert filtered.table.column("SEPAL_LENGTH").to_pylist() == [5.1] * 10
    limited = read_history(settings, name, engine=engine, sql=f'SELECT species FROM "{name}" LIMIT 4', cache=False)
    assert limited.table.num_rows == 4


def test_bad_records_are_counted_not_fatal(
    kafka_settings: Settings, kafka_config: dict, topic: Callable[..., str], tmp_path: Path
) -> None:
    name = topic(partitions=1)
    good = get_format("JSON", pa.schema([("x", pa.float64())])).encode(pa.table({"x": [1.0, 2.0, 3.0]}))
    with Producer(kafka_config) as producer:
        producer.produce_batch(name, [good[0], b"{not json", good[1], None, good[2]])
    engine = SqlEngine.with_plugins()
    engine.execute(f"CREATE STREAM s (x DOUBLE) WITH (KAFKA_TOPIC='{name}', VALUE_FORMAT='JSON');")
    result = read_history(settings_at(kafka_settings, tmp_path), "s", engine=engine)
    assert result.table.column("X").to_pylist() == [1.0, 2.0, 3.0]
    assert (result.records, result.decode_failures, result.tombstones) == (5, 1, 1)


def test_stateful_queries_and_bad_bounds_are_refused(
    kafka_settings: Settings, topic: Callable[..., str], tmp_path: Path
) -> None:
    name = topic(partitions=1)
    settings = settings_at(kafka_settings, tmp_path)
    with pytest.raises(SqlError, match="stateless"):
        read_history(settings, "tx", sql="SELECT Class, COUNT(*) FROM tx GROUP BY Class", engine=fraud_engine(name))
    with pytest.raises(SqlError, match="take a SELECT"):
        read_history(settings, "tx", sql="CREATE STREAM copy AS SELECT * FROM tx", engine=fraud_engine(name))
    with pytest.raises(InputError, match="not both"):
        Bounds(from_offset=1, from_time_ms=5)
    with pytest.raises(InputError, match="invalid time"):
        parse_time("yesterday")
