"""Statements ksqlDB refuses are refused here too, at the statement, with the reason; none runs as something
else (a join keyword read as an alias once made a FULL JOIN an inner join)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from streamml.errors import SqlError
from streamml.sql import SqlEngine


@pytest.fixture
def engine() -> SqlEngine:
    eng = SqlEngine()
    eng.execute(
        "CREATE STREAM s (ID INT KEY, A INT) WITH (KAFKA_TOPIC='s', VALUE_FORMAT='JSON');"
        "CREATE STREAM t (ID INT KEY, B INT) WITH (KAFKA_TOPIC='t', VALUE_FORMAT='JSON');"
    )
    return eng


@pytest.mark.parametrize(
    ("join", "kind"),
    [("FULL JOIN", "FULL"), ("FULL OUTER JOIN", "FULL"), ("RIGHT JOIN", "RIGHT"), ("RIGHT OUTER JOIN", "RIGHT")],
)
def test_outer_joins_are_read_as_joins(engine: SqlEngine, join: str, kind: str) -> None:
    plan = engine.plan(f"SELECT s.ID, A, B FROM s {join} t WITHIN 1 MINUTE ON s.ID = t.ID EMIT CHANGES;")
    assert plan.join is not None and plan.join.kind == kind and [s.name for s in plan.sources] == ["S", "T"]


@pytest.mark.parametrize("join", ["JOIN", "INNER JOIN", "LEFT JOIN", "LEFT OUTER JOIN"])
def test_joins_that_run(engine: SqlEngine, join: str) -> None:
    plan = engine.plan(f"SELECT s.ID, A, B FROM s {join} t WITHIN 1 MINUTE ON s.ID = t.ID EMIT CHANGES;")
    assert plan.join is not None and plan.join.kind == ("LEFT" if "LEFT" in join else "INNER")


def test_emit_final_needs_a_windowed_aggregation(engine: SqlEngine) -> None:
    with pytest.raises(SqlError, match="EMIT FINAL is only for windowed aggregations"):
        engine.plan("SELECT ID, COUNT(*) AS N FROM s GROUP BY ID EMIT FINAL;")
    plan = engine.plan("SELECT ID, COUNT(*) AS N FROM s WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY ID EMIT FINAL;")
    assert plan.aggregate is not None and plan.aggregate.emit_final


def test_partition_by_several_expressions_keys_by_all_of_them_in_order(engine: SqlEngine) -> None:
    plan = engine.plan("SELECT A, ID FROM s PARTITION BY A, ID * 2 EMIT CHANGES;")
    assert [(o.name, o.key) for o in plan.output] == [("A", True), ("KSQL_COL_0", True), ("ID", False)]
    with pytest.raises(SqlError, match="PARTITION BY NULL cannot be combined"):
        engine.plan("SELECT A FROM s PARTITION BY A, NULL EMIT CHANGES;")


def test_a_stream_is_not_made_from_a_table(engine: SqlEngine) -> None:
    engine.execute("CREATE TABLE users (ID INT PRIMARY KEY, NAME VARCHAR) WITH (KAFKA_TOPIC='u', VALUE_FORMAT='JSON');")
    with pytest.raises(SqlError, match="a query over a table produces a table"):
        engine.execute("CREATE STREAM names AS SELECT ID, NAME FROM users;")
    (created,) = engine.execute("CREATE STREAM enriched AS SELECT s.ID, A, NAME FROM s JOIN users u ON s.ID = u.ID;")
    assert created.query_id is not None  # a stream-table join is a stream


def test_aggregating_a_table_takes_changed_and_deleted_rows_back(engine: SqlEngine) -> None:
    """COUNT, SUM and AVG over a table go down when a row moves to another group, is deleted, or stops
    matching WHERE, as a ksqlDB table aggregation does."""
    engine.execute(
        "CREATE TABLE users (ID INT PRIMARY KEY, REGION VARCHAR, SCORE INT) WITH (KAFKA_TOPIC='u', VALUE_FORMAT='JSON');"
    )
    plan = engine.plan(
        "SELECT REGION, COUNT(*) AS N, SUM(SCORE) AS S, AVG(SCORE) AS A FROM users WHERE SCORE >= 0 "
        "GROUP BY REGION EMIT CHANGES;"
    )
    executor = plan.executor()

    def change(*rows: tuple[int, str | None, int | None, bool]) -> dict[str, tuple]:
        batch = pa.table({"ID": pa.array([r[0] for r in rows], pa.int32()), "REGION": [r[1] for r in rows],
                          "SCORE": pa.array([r[2] for r in rows], pa.int32()), "__delete": [r[3] for r in rows]})  # fmt: skip
        return {r["REGION"]: (r["N"], r["S"], r["A"]) for r in executor.execute(batch).table.to_pylist()}

    assert change((1, "eu", 10, False), (2, "eu", 20, False), (3, "us", 5, False)) == {
        "eu": (2, 30, 15.0),
        "us": (1, 5, 5.0),
    }
    assert change((2, "us", 20, False)) == {"eu": (1, 10, 10.0), "us": (2, 25, 12.5)}  # moved
    assert change((1, None, None, True)) == {"eu": (0, 0, None)}  # deleted
    assert change((3, "us", -1, False)) == {"us": (1, 20, 20.0)}  # no longer matches WHERE
    assert change((4, "eu", 1, False), (4, "eu", 2, False), (4, None, None, True), (4, "us", 3, False)) == {
        "us": (2, 23, 11.5)
    }  # in one batch the last change of a key wins


def test_a_table_aggregation_needs_functions_that_can_take_rows_back(engine: SqlEngine) -> None:
    engine.execute(
        "CREATE TABLE users (ID INT PRIMARY KEY, REGION VARCHAR, SCORE INT) WITH (KAFKA_TOPIC='u', VALUE_FORMAT='JSON');"
    )
    with pytest.raises(SqlError, match="MAX cannot take back a changed row"):
        engine.plan("SELECT REGION, MAX(SCORE) AS M FROM users GROUP BY REGION EMIT CHANGES;")
    with pytest.raises(SqlError, match="a TABLE cannot be windowed"):
        engine.plan("SELECT REGION, COUNT(*) AS N FROM users WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY REGION;")


@pytest.mark.parametrize(
    ("statement", "row"),
    [
        ("INSERT INTO s (ID, A) VALUES (1, 2);", {"ID": 1, "A": 2}),
        ("INSERT INTO s VALUES (3, '4');", {"ID": 3, "A": 4}),
        ("INSERT INTO s (A, ROWTIME) VALUES (ABS(-5), 1000);", {"ID": None, "A": 5, "ROWTIME": 1000}),
    ],
)
def test_insert_values_builds_the_row(engine: SqlEngine, statement: str, row: dict) -> None:
    (result,) = engine.execute(statement)
    assert result.kind == "VALUES" and result.rows is not None and result.rows.to_pylist() == [row]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("INSERT INTO s (ID) VALUES (1, 2);", "2 values for 1 columns"),
        ("INSERT INTO s (B) VALUES (1);", "has no column 'B'"),
        ("INSERT INTO s (A, A) VALUES (1, 2);", "given twice"),
        ("INSERT INTO s (A) VALUES ('x');", "column 'A' is INTEGER, the value is STRING"),
        ("INSERT INTO s (A) VALUES (ID);", "unknown column"),
        ("INSERT INTO nowhere (A) VALUES (1);", "nowhere"),
    ],
)
def test_insert_values_is_checked_at_the_statement(engine: SqlEngine, statement: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        engine.execute(statement)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ("VALUE_FORMAT='JSON_SR'", "format JSON_SR is not supported here"),
        ("VALUE_FORMAT='PROTOBUF'", "format PROTOBUF is not supported here"),
        ("VALUE_FORMAT='NONE'", "NONE is a key format"),
    ],
)
def test_formats_without_a_codec_are_refused_at_the_statement(props: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        SqlEngine().execute(f"CREATE STREAM x (A INT) WITH (KAFKA_TOPIC='x', {props});")


def test_key_format_none_means_no_key(tmp_path: object) -> None:
    from pathlib import Path

    from streamml.config import Settings
    from streamml.runtime.codec import SinkCodec

    engine = SqlEngine()
    engine.execute("CREATE STREAM x (A INT) WITH (KAFKA_TOPIC='x', VALUE_FORMAT='JSON', KEY_FORMAT='NONE');")
    with pytest.raises(SqlError, match="cannot hold key columns"):
        engine.execute(
            "CREATE STREAM y (K INT KEY, A INT) WITH (KAFKA_TOPIC='y', VALUE_FORMAT='JSON', KEY_FORMAT='NONE');"
        )
    with pytest.raises(SqlError, match="cannot hold key columns"):
        engine.execute("CREATE STREAM z AS SELECT A FROM x PARTITION BY A;")
    (created,) = engine.execute("CREATE STREAM copy AS SELECT A FROM x;")
    plan = engine.queries[created.query_id]
    sink = SinkCodec(plan, engine.catalog.get("copy"), Settings(home=Path(str(tmp_path))), [])
    out = sink.encode(plan.executor().execute(pa.table({"A": pa.array([1], pa.int32())})), [b"k"], np.array([0]))
    assert out.keys == [None] and out.values == [b'{"A":1}']


def test_create_or_replace_upgrades_the_query_in_place(engine: SqlEngine) -> None:
    (first,) = engine.execute("CREATE STREAM doubled AS SELECT ID, A * 2 AS B FROM s;")
    (second,) = engine.execute("CREATE OR REPLACE STREAM doubled AS SELECT ID, A * 3 AS B FROM s;")
    assert second.query_id == first.query_id and list(engine.queries) == [first.query_id]
    assert "A * 3" in engine.queries[first.query_id].text


def test_the_avro_schema_full_name_is_checked_at_the_statement(tmp_path: object) -> None:
    from pathlib import Path

    from streamml.config import Settings
    from streamml.runtime.codec import value_format

    engine = SqlEngine()
    with pytest.raises(SqlError, match="is not an Avro full name"):
        engine.execute(
            "CREATE STREAM x (A INT) WITH (KAFKA_TOPIC='x', VALUE_FORMAT='AVRO', VALUE_AVRO_SCHEMA_FULL_NAME='a-b');"
        )
    engine.execute(
        "CREATE STREAM y (A INT) WITH (KAFKA_TOPIC='y', VALUE_FORMAT='AVRO', VALUE_AVRO_SCHEMA_FULL_NAME='com.acme.Pet');"
    )
    source = engine.catalog.get("y")
    fmt = value_format(source, source.value_schema(), Settings(home=Path(str(tmp_path))))
    assert fmt.avro_schema["name"] == "Pet" and fmt.avro_schema["namespace"] == "com.acme"  # type: ignore[attr-defined]
