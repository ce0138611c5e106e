"""Persistent and transient queries on the real broker, with the statements of the public KSQL demos."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest

from streamml.kafka import Admin, BatchConsumer
from streamml.runtime.deadletter import header_dict
from streamml.runtime.naming import dead_letter_topic
from streamml.runtime.session import Session, wait_for
from tests.runtime.conftest import produce_table, pull_until, running

pytestmark = pytest.mark.broker

V = ", ".join(f"V{i} double" for i in range(1, 29))
V_NAMES = ", ".join(f"V{i}" for i in range(1, 29))


def fraud_rows(n: int, empty_class_at: set[int]) -> list[bytes]:
    rows = []
    for i in range(n):
        vs = ",".join(f"{(i + j) / 10:.1f}" for j in range(28))
        cls = "" if i in empty_class_at else str(i % 2)
        rows.append(f"{i},2026-01-01 00:00:{i:02d},user{i % 3},{i},{vs},{i * 1.5},{cls}".encode())
    return rows


def create_source(session: Session, topic: str) -> None:
    session.execute(
        f"CREATE STREAM creditcardfraud_source (Id bigint, Timestamp varchar, User varchar, Time int, {V}, "
        f"Amount double, Class string) WITH (kafka_topic='{topic}', value_format='DELIMITED', KEY='Id');"
    )


def test_delimited_to_avro_drops_unlabelled(
    session: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    source, sink = topic(partitions=2), unique("preprocessed")
    from streamml.kafka import Producer

    with Producer(kafka_config) as producer:
        producer.produce_batch(source, fraud_rows(20, {3, 11}), [str(i).encode() for i in range(20)])
    create_source(session, source)
    outcomes = session.execute(
        f"CREATE STREAM creditcardfraud_preprocessed_avro WITH (VALUE_FORMAT='AVRO', KAFKA_TOPIC='{sink}') "
        f"AS SELECT Time, {V_NAMES}, Amount, Class FROM creditcardfraud_source WHERE Class IS NOT NULL;"
    )
    assert outcomes[0].result.query_id is not None
    with running(session):
        out = pull_until(session, "SELECT * FROM creditcardfraud_preprocessed_avro;", 18)
    assert out.num_rows == 18
    assert sorted(out.column("TIME").to_pylist()) == [i for i in range(20) if i not in {3, 11}]
    assert "CLASS" in out.column_names and "USER" not in out.column_names
    described = session.execute("DESCRIBE creditcardfraud_preprocessed_avro EXTENDED;")[0].message
    assert "AVRO" in described


def test_push_query_masks_and_defaults(session: Session, kafka_config: dict, topic: Callable[..., str]) -> None:
    source = topic()
    from streamml.kafka import Producer

    with Producer(kafka_config) as producer:
        producer.produce_batch(source, fraud_rows(5, {2}))
    create_source(session, source)
    session.execute("SET 'auto.offset.reset'='earliest';")
    masked = session.execute(
        "SELECT Id, MASK_LEFT(User, 2) AS masked FROM creditcardfraud_source EMIT CHANGES LIMIT 5;"
    )[0].rows
    assert masked is not None
    assert masked.column("MASKED").to_pylist() == ["xxer0", "xxer1", "xxer2", "xxer0", "xxer1"]
    labels = session.execute(
        "SELECT Id, IFNULL(Class, '-1') AS label FROM creditcardfraud_source EMIT CHANGES LIMIT 5;"
    )[0].rows
    assert labels is not None
    assert labels.column("LABEL").to_pylist() == ["0", "1", "-1", "1", "0"]


def test_stream_table_join(
    session: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    source, users_topic, sink = topic(), topic(), unique("enriched")
    from streamml.kafka import Producer

    session.execute(
        f"CREATE TABLE users (userid varchar PRIMARY KEY, gender varchar, regionid varchar) "
        f"WITH (kafka_topic='{users_topic}', value_format='AVRO');"
    )
    users = pa.table({"GENDER": ["F", "M"], "REGIONID": ["r1", "r2"]})
    produce_table(kafka_config, users_topic, users, "AVRO", keys=[b"user0", b"user1"])
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, fraud_rows(6, set()))
    create_source(session, source)
    session.execute(
        f"CREATE STREAM enriched WITH (KAFKA_TOPIC='{sink}', VALUE_FORMAT='JSON') AS SELECT c.Id, c.User, u.gender, u.regionid "
        "FROM creditcardfraud_source c INNER JOIN users u ON c.User = u.userid;"
    )
    with running(session):
        out = pull_until(session, "SELECT * FROM enriched;", 4)
    rows = sorted(out.to_pylist(), key=lambda r: r["ID"])
    assert [r["ID"] for r in rows] == [0, 1, 3, 4]  # user2 has no row in the table: inner join drops it
    assert [r["GENDER"] for r in rows] == ["F", "M", "F", "M"]


def test_malformed_records_are_dead_lettered(
    session: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str], admin: Admin
) -> None:
    source, sink = topic(), unique("clean")
    from streamml.kafka import Producer

    good = fraud_rows(4, set())
    with Producer(kafka_config) as producer:
        producer.produce_batch(
            source, [good[0], b"1,not enough,fields", good[1], b"x,2026,u,notanint," + b"1," * 29 + b"0", good[2]]
        )
    create_source(session, source)
    query_id = session.execute(
        f"CREATE STREAM clean WITH (KAFKA_TOPIC='{sink}') AS SELECT Id, Amount FROM creditcardfraud_source;"
    )[0].result.query_id
    assert query_id is not None
    with running(session):
        out = pull_until(session, "SELECT * FROM clean;", 3)
        dlq = dead_letter_topic(session.settings.service_id, query_id)
        assert wait_for(lambda: admin.exists(dlq) and admin.watermarks(dlq)[0][1] >= 2, 30)
    assert sorted(out.column("ID").to_pylist()) == [0, 1, 2]
    with BatchConsumer(kafka_config, [dlq], track_end=True) as reader:
        letters = []
        while not reader.reached_end():
            batch = reader.poll_batch(100, 0.5)
            letters += [(v, header_dict(h)) for v, h in zip(batch.values, batch.headers, strict=True)]
    assert [v for v, _ in letters] == [b"1,not enough,fields", b"x,2026,u,notanint," + b"1," * 29 + b"0"]
    headers = letters[0][1]
    assert headers["streamml.error.kind"] == "decode"
    assert headers["streamml.source.topic"] == source
    assert headers["streamml.source.offset"] == "1"
    assert headers["streamml.query"] == query_id
    assert "field" in headers["streamml.error.message"].lower()


SENSORS = (
    "coolant_temp DOUBLE, intake_air_temp DOUBLE, intake_air_flow_speed DOUBLE, battery_percentage DOUBLE, "
    "battery_voltage DOUBLE, current_draw DOUBLE, speed DOUBLE, engine_vibration_amplitude DOUBLE, "
    "throttle_pos DOUBLE, tire_pressure11 INT, tire_pressure12 INT, tire_pressure21 INT, tire_pressure22 INT, "
    "accelerometer11_value DOUBLE, accelerometer12_value DOUBLE, accelerometer21_value DOUBLE, "
    "accelerometer22_value DOUBLE, control_unit_firmware INT, failure_occurred VARCHAR"
)


def test_car_sensor_statements(
    session: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    import time

    import orjson

    from streamml.kafka import Producer

    source = topic(partitions=2)
    now = (int(time.time() * 1000) // 300_000 - 2) * 300_000  # a 5-minute boundary, 10 minutes ago
    names = [c.split()[0] for c in SENSORS.split(", ")]
    rows, keys, stamps = [], [], []
    for i in range(30):  # car1: 20 readings in the first window, car2: 5 + 5 in two windows
        car = "car1" if i < 20 else "car2"
        row = {n: 1.0 * i for n in names} | {n: 30 for n in names if n.startswith("tire")}
        row |= {"control_unit_firmware": 1000, "failure_occurred": "false"}
        rows.append(orjson.dumps(row))
        keys.append(car.encode())
        stamps.append(now + (i * 1000 if i < 25 else 300_000 + i * 1000))
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, rows, keys, timestamps=stamps)
    avro, keyed, counts = unique("sensor-avro"), unique("sensor-keyed"), unique("per5min")
    session.execute(
        f"CREATE STREAM car_sensors ({SENSORS}) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');"
        f"CREATE STREAM car_sensors_avro WITH (VALUE_FORMAT='AVRO', KAFKA_TOPIC='{avro}') AS SELECT * FROM car_sensors;"
        f"CREATE STREAM car_sensors_keyed WITH (KAFKA_TOPIC='{keyed}') AS SELECT ROWKEY AS car, * FROM car_sensors PARTITION BY car;"
        f"CREATE TABLE events_per_5min WITH (KAFKA_TOPIC='{counts}') AS SELECT car, COUNT(*) AS event_count "
        "FROM car_sensors_keyed WINDOW TUMBLING (SIZE 5 MINUTES) GROUP BY car;"
    )
    with running(session):
        as_avro = pull_until(session, "SELECT * FROM car_sensors_avro;", 30)
        pull_until(session, "SELECT * FROM car_sensors_keyed;", 30)
        latest: dict[bytes | None, bytes | None] = {}

        def counted() -> bool:
            with BatchConsumer(kafka_config, [counts], track_end=True) as reader:
                while not reader.reached_end():
                    batch = reader.poll_batch(1000, 0.3)
                    latest.update(zip(batch.keys, batch.values, strict=True))
            return sum(orjson.loads(v)["EVENT_COUNT"] for v in latest.values() if v) >= 30

        assert wait_for(counted, 60)
    assert as_avro.num_rows == 30 and sorted(as_avro.column("SPEED").to_pylist()) == [float(i) for i in range(30)]
    with BatchConsumer(kafka_config, [keyed], track_end=True) as reader:
        keyed_rows = []
        while not reader.reached_end():
            batch = reader.poll_batch(1000, 0.3)
            keyed_rows += list(zip(batch.keys, batch.partitions, batch.values, strict=True))
    assert {k for k, _, _ in keyed_rows} == {b"car1", b"car2"}
    assert all("CAR" not in orjson.loads(v) for _, _, v in keyed_rows if v)  # the key column lives in the key
    assert len({p for k, p, _ in keyed_rows if k == b"car1"}) == 1, "re-keyed: one car, one partition"
    windows = {
        (k[:-8], int.from_bytes(k[-8:], "big")): orjson.loads(v)["EVENT_COUNT"] for k, v in latest.items() if k and v
    }
    assert windows == {(b"car1", now): 20, (b"car2", now): 5, (b"car2", now + 300_000): 5}


def test_runner_follows_the_catalog_starting_and_terminating_queries(
    session: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    """A query created while the runner runs is started; a terminated one is stopped."""
    from streamml.kafka import Producer

    source = topic()
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, fraud_rows(6, set()))
    create_source(session, source)
    first = session.execute(
        f"CREATE STREAM first_ids WITH (KAFKA_TOPIC='{unique('first')}') AS SELECT Id FROM creditcardfraud_source;"
    )[0].result.query_id
    with running(session) as runner:
        assert wait_for(lambda: [m.query_id for m in runner.status()] == [first], 30)
        later = session.execute(
            f"CREATE STREAM later_ids WITH (KAFKA_TOPIC='{unique('later')}') AS SELECT Id FROM creditcardfraud_source;"
        )[0].result.query_id
        assert later is not None
        out = pull_until(session, "SELECT * FROM later_ids;", 6)
        assert sorted(out.column("ID").to_pylist()) == list(range(6))
        session.execute(f"TERMINATE {first};")
        assert wait_for(lambda: [m.query_id for m in runner.status()] == [later], 30)


def test_a_rebalance_while_reading_ahead_reads_both_batches_again(
    session: Session, kafka_config: dict, topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    """Under load a worker polls the next batch before processing the current one; when that poll rebalances the
    group, both unprocessed batches must be read again: every record exactly once in the committed output."""
    import orjson

    from streamml.kafka import Producer
    from streamml.runtime.options import RuntimeOptions
    from streamml.runtime.query import PersistentQuery

    source, sink_topic, n = topic(partitions=2), unique("copied"), 3_000
    with Producer(kafka_config) as producer:
        producer.produce_batch(source, [orjson.dumps({"n": i}) for i in range(n)], [str(i).encode() for i in range(n)])
    session.execute(f"CREATE STREAM events (n BIGINT) WITH (KAFKA_TOPIC='{source}', VALUE_FORMAT='JSON');")
    query_id = session.execute(f"CREATE STREAM copied WITH (KAFKA_TOPIC='{sink_topic}') AS SELECT n FROM events;")[
        0
    ].result.query_id
    plan = session.engine.queries[query_id]
    assert plan.sink is not None
    query = PersistentQuery(
        query_id,
        plan,
        session.engine.catalog.get(plan.sink.name),
        session.settings,
        RuntimeOptions(max_batch=200, max_wait_ms=200),
    )
    query._open()
    assert query.consumer is not None
    poll_batch, rebalanced = query.consumer.poll_batch, []

    def rebalancing_read_ahead(max_records: int, timeout_s: float) -> object:
        if timeout_s == 0 and len(rebalanced) < 3:  # the read-ahead poll: the group rebalances inside it
            rebalanced.append(max_records)
            query._assigned([])
        return poll_batch(max_records, timeout_s)

    query.consumer.poll_batch = rebalancing_read_ahead  # type: ignore[method-assign]
    try:
        steps = 0
        while query.metrics.records_out < n and steps < 500:
            query.step()
            steps += 1
    finally:
        query.close()
    assert len(rebalanced) == 3
    with BatchConsumer(kafka_config, [sink_topic], isolation="read_committed", track_end=True) as reader:
        values: list[int] = []
        while not reader.reached_end():
            values += [orjson.loads(v)["N"] for v in reader.poll_batch(5_000, 0.5).values if v is not None]
    assert sorted(values) == list(range(n))
