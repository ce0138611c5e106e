"""The statements of the public KSQL + TensorFlow demos, run on in-memory batches."""

from __future__ import annotations

import pyarrow as pa

from streamml.demos.maintenance import PIPELINE_SQL
from streamml.sql import SqlEngine


def card_batch(n: int = 4) -> pa.Table:
    data: dict[str, list] = {
        "Id": list(range(1, n + 1)),
        "Timestamp": ["2019-01-01"] * n,
        "User": ["Hans", "Anna", None, "Bob"][:n],
        "Time": list(range(n)),
    }
    for i in range(1, 29):
        data[f"V{i}"] = [float(i) + r / 10 for r in range(n)]
    data["Amount"] = [10.0 * (r + 1) for r in range(n)]
    data["Class"] = ["0", None, "1", "0"][:n]
    return pa.table(data)


def test_create_source_stream(engine: SqlEngine) -> None:
    source = engine.catalog.get("creditcardfraud_source")
    assert source.topic == "creditcardfraud_source"
    assert source.value_format == "DELIMITED"
    assert source.key_field == "ID"
    assert [c.name for c in source.columns][:4] == ["ID", "TIMESTAMP", "USER", "TIME"]
    assert len(source.columns) == 4 + 28 + 2
    assert str(source.column("v28").type) == "DOUBLE"  # type: ignore[union-attr]


def test_csas_to_avro_drops_null_class(engine: SqlEngine) -> None:
    v = ", ".join(f"V{i}" for i in range(1, 29))
    [result] = engine.execute(
        "CREATE STREAM creditcardfraud_preprocessed_avro WITH (VALUE_FORMAT='AVRO', "
        f"KAFKA_TOPIC='creditcardfraud_preprocessed_avro') AS SELECT Time, {v}, Amount, Class "
        "FROM creditcardfraud_source WHERE Class IS NOT NULL;"
    )
    assert result.query_id is not None and result.query_id.startswith("CSAS_CREDITCARDFRAUD_PREPROCESSED_AVRO")
    created = engine.catalog.get("CREDITCARDFRAUD_PREPROCESSED_AVRO")
    assert created.value_format == "AVRO" and created.topic == "creditcardfraud_preprocessed_avro"
    assert [c.name for c in created.columns] == ["TIME", *(f"V{i}" for i in range(1, 29)), "AMOUNT", "CLASS"]
    assert result.plan is not None and result.plan.sink is not None
    out = result.plan.executor().execute(card_batch(), {"ROWTIME": [1, 2, 3, 4]})
    assert out.table.column("CLASS").to_pylist() == ["0", "1", "0"]
    assert out.indices.tolist() == [0, 2, 3]
    assert out.timestamps.to_pylist() == [1, 3, 4]
    assert out.counters["filtered"] == 1


def test_mask_left_and_ifnull(engine: SqlEngine) -> None:
    masked = engine.plan("SELECT Id, MASK_LEFT(User, 2) FROM creditcardfraud_source EMIT CHANGES;")
    assert [c.name for c in masked.output] == ["ID", "KSQL_COL_0"]
    out = masked.executor().execute(card_batch())
    assert out.table.column("KSQL_COL_0").to_pylist() == ["Xxns", "Xxna", None, "Xxb"]
    filled = engine.plan("SELECT Id, IFNULL(Class, '-1') FROM creditcardfraud_source EMIT CHANGES;")
    out = filled.executor().execute(card_batch())
    assert out.table.column("KSQL_COL_0").to_pylist() == ["0", "-1", "1", "0"]


def test_stream_table_join(engine: SqlEngine) -> None:
    plan = engine.plan(
        "SELECT c.Id, c.User, u.gender, u.regionid FROM creditcardfraud_source c "
        "INNER JOIN users u ON c.User = u.userid EMIT CHANGES;"
    )
    ex = plan.executor()
    ex.update_table(pa.table({"userid": ["Hans", "Anna"], "gender": ["M", "F"], "regionid": ["R1", "R2"]}))
    out = ex.execute(card_batch())
    rows = sorted(zip(*(out.table.column(n).to_pylist() for n in ["ID", "USER", "GENDER", "REGIONID"]), strict=True))
    assert rows == [(1, "Hans", "M", "R1"), (2, "Anna", "F", "R2")]
    # update and delete on the table side
    ex.update_table(
        pa.table({"USERID": ["Hans", "Anna", "Bob"], "GENDER": ["X", None, "M"], "REGIONID": ["R9", None, "R3"]}),
        tombstones=[False, True, False],
    )
    out = ex.execute(card_batch())
    rows = sorted(zip(*(out.table.column(n).to_pylist() for n in ["ID", "USER", "GENDER"]), strict=True))
    assert rows == [(1, "Hans", "X"), (4, "Bob", "M")]
    left = engine.plan(
        "SELECT c.Id, u.gender FROM creditcardfraud_source c LEFT JOIN users u ON c.User = u.userid;"
    ).executor()
    left.update_table(pa.table({"userid": ["Hans"], "gender": ["M"], "regionid": ["R1"]}))
    out = left.execute(card_batch())
    assert sorted(out.table.to_pylist(), key=lambda r: r["ID"]) == [
        {"ID": 1, "GENDER": "M"},
        {"ID": 2, "GENDER": None},
        {"ID": 3, "GENDER": None},
        {"ID": 4, "GENDER": None},
    ]


def car_batch(rowkeys: list[str]) -> pa.Table:
    n = len(rowkeys)
    doubles = ["coolant_temp", "intake_air_temp", "intake_air_flow_speed", "battery_percentage", "battery_voltage",
               "current_draw", "speed", "engine_vibration_amplitude", "throttle_pos", "accelerometer11_value",
               "accelerometer12_value", "accelerometer21_value", "accelerometer22_value"]  # fmt: skip
    ints = ["tire_pressure11", "tire_pressure12", "tire_pressure21", "tire_pressure22", "control_unit_firmware"]
    data: dict[str, list] = {c: [1.5] * n for c in doubles}
    data.update({c: [30] * n for c in ints})
    data["failure_occurred"] = ["false"] * n
    return pa.table(data)


def test_car_pipeline(engine: SqlEngine) -> None:
    results = engine.execute(PIPELINE_SQL)  # the connected-car demo's KSQL
    avro, rekeyed, table = (r.plan for r in results)
    assert avro is not None and rekeyed is not None and table is not None
    assert engine.catalog.get("CAR_DATA_AVRO").value_format == "AVRO"
    assert len(engine.catalog.get("CAR_DATA_AVRO").columns) == 19
    # re-key: the car id moves from the record key into a key column
    assert rekeyed.key_columns == ["CAR"]
    keys = ["car1", "car2", "car1"]
    out = rekeyed.executor().execute(avro.executor().execute(car_batch(keys)).table, {"ROWKEY": keys})
    assert out.table.column("CAR").to_pylist() == keys
    assert out.table.num_columns == 20
    # windowed count over two batches and a late record
    sink = engine.catalog.get("EVENTS_PER_5MIN")
    assert sink.kind == "TABLE" and sink.windowed
    assert table.key_columns == ["CAR", "WINDOWSTART", "WINDOWEND"]
    ex = table.executor()
    minute = 60_000
    first = ex.execute(out.table, {"ROWTIME": [0, minute, 2 * minute]})
    assert sorted(first.table.to_pylist(), key=lambda r: r["CAR"]) == [
        {"CAR": "car1", "WINDOWSTART": 0, "WINDOWEND": 5 * minute, "EVENT_COUNT": 2},
        {"CAR": "car2", "WINDOWSTART": 0, "WINDOWEND": 5 * minute, "EVENT_COUNT": 1},
    ]
    second_keys = ["car1", "car1", "car2"]
    batch2 = rekeyed.executor().execute(car_batch(second_keys), {"ROWKEY": second_keys}).table
    second = ex.execute(batch2, {"ROWTIME": [4 * minute, 6 * minute, 7 * minute]})
    rows = sorted(second.table.to_pylist(), key=lambda r: (r["CAR"], r["WINDOWSTART"]))
    assert rows == [
        {"CAR": "car1", "WINDOWSTART": 0, "WINDOWEND": 5 * minute, "EVENT_COUNT": 3},
        {"CAR": "car1", "WINDOWSTART": 5 * minute, "WINDOWEND": 10 * minute, "EVENT_COUNT": 1},
        {"CAR": "car2", "WINDOWSTART": 5 * minute, "WINDOWEND": 10 * minute, "EVENT_COUNT": 1},
    ]
    assert second.counters["late"] == 0


def test_car_pipeline_on_the_fleet_simulator(engine: SqlEngine) -> None:
    """The demo's KSQL (JSON to AVRO, re-key by car, 5-minute tumbling counts) over the simulator's readings,
    decoded from the JSON the simulator publishes: the counts per car and window are the readings' own."""
    from streamml.formats import get_format
    from streamml.ingest.cars import CarFleet, kafka_records, ksql_spelling

    readings = ksql_spelling(CarFleet(5, seed=3).readings(120))  # 5 cars, a reading every second: 2 minutes
    values, keys = kafka_records(readings)
    source = engine.catalog.get("CAR_DATA")
    decoded = get_format("JSON", pa.schema([(c.name, c.type.to_arrow()) for c in source.columns])).decode(values)
    assert not decoded.failures and all(c.null_count == 0 for c in decoded.table.columns)  # every field read
    results = engine.execute(PIPELINE_SQL)  # the connected-car demo's KSQL
    avro, rekeyed, table = (r.plan for r in results)
    assert avro is not None and rekeyed is not None and table is not None
    cars = [k.decode() for k in keys]
    stamps = [int(t) * 1000 for t in readings.column("time").to_pylist()]
    converted = avro.executor().execute(decoded.table, {"ROWKEY": cars, "ROWTIME": stamps}).table
    out = rekeyed.executor().execute(converted, {"ROWKEY": cars, "ROWTIME": stamps})
    counts = table.executor().execute(out.table, {"ROWTIME": stamps}).table.to_pylist()
    window = 5 * 60_000
    expected: dict[tuple[str, int], int] = {}
    for car, ms in zip(cars, stamps, strict=True):
        expected[(car, ms - ms % window)] = expected.get((car, ms - ms % window), 0) + 1
    latest = {(r["CAR"], r["WINDOWSTART"]): r["EVENT_COUNT"] for r in counts}
    assert latest == expected and len({c for c, _ in expected}) == 5
